"""Label correlation: which SAE features fire for each label of a labelled text dataset.

For a dataset of ``(text, label)`` pairs (EMGSD: ``stereotype`` / ``neutral`` /
``unrelated``; SST-2: ``negative`` / ``positive``; any CSV/TSV/JSONL file), the model
reads each text in one plain forward pass (the text itself, no prompt template) and the
SAE activations at each SAE's own site are pooled over the text's tokens (METHOD.md §7):

    z_l = pool_t f_l(x_t)        (d_sae,)   pool = max (default) or mean over the text's tokens

The text's tokens exclude padding and the special tokens the tokenizer adds (BOS:
Gemma's BOS residual is tens of times larger than any other and would dominate a max;
the default SAEs are trained without it too). Every layer keeps one
``CorrelationAccumulator`` per label ``k`` with ``y = 1[label == k]`` (one-vs-rest): the
accumulators of a layer all see the same ``z``, only ``y`` differs. Per label and layer
this gives the features that fire for the label: point-biserial ``r``, the steering
coefficient (mean ``z`` over the label's texts) and the activation frequency (over all
texts, and within the label's texts).

Batches are right-padded (a causal model's real tokens never attend to right padding,
so a text's ``z`` does not depend on its batch) and sorted by length, and the forward
pass stops after the deepest SAE site (the LM head never runs). Data sources are
:func:`load_labelled`; the command line is :func:`main_labels`; comparing SAEs is
:mod:`corrsteer.sae_comparison`.

Example:
    >>> from corrsteer.labels import label_correlations, load_labelled
    >>> data = load_labelled("emgsd", n=2000, seed=0)                       # doctest: +SKIP
    >>> lc = label_correlations(model, tok, saes, data.texts, data.labels)   # doctest: +SKIP
    >>> lc.top("stereotype", layer=6, k=1)                                   # doctest: +SKIP
    [{'index': 1234, 'r': 0.41, 'coefficient': 7.2, 'frequency': 0.35, 'frequency_label': 0.81}]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from corrsteer.atomic import write_json
from corrsteer.errors import CorrsteerError
from corrsteer.layers import d_model, find_layers
from corrsteer.sites import check_site, read_sites

log = logging.getLogger(__name__)

POOLS = ("max", "mean")
DATASETS = ("emgsd", "sst2")
SPLITS = ("train", "validation", "test", "all")
SST2_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
SST2_LABELS = ("negative", "positive")

__all__ = ["LabelCorrelations", "LabelledTexts", "check_labelled", "iter_pooled", "label_correlations",
           "load_labelled", "main_labels", "pool_texts"]


# --------------------------------------------------------------------------------- data


@dataclass
class LabelledTexts:
    """Texts with one label each (and optionally a group, e.g. EMGSD's category)."""

    texts: list[str]                 # the texts, read as they are (no template)
    labels: list[str]                # one label per text
    groups: list[str] | None = None  # one group per text, or None
    source: str = ""                 # where the rows came from (file and split)


def load_labelled(dataset: str, *, split: str | None = None, text_column: str = "text",
                  label_column: str = "label", group_column: str | None = None,
                  groups: Collection[str] | None = None, n: int | None = None, seed: int = 0,
                  data_dir: str | None = None) -> LabelledTexts:
    """Read a labelled text dataset: ``"emgsd"``, ``"sst2"`` or a CSV/TSV/JSONL/JSON file.

    Args:
        dataset: ``"emgsd"`` (label = stereotype/neutral/unrelated, group = category,
            ``"unrelated"`` for unrelated rows), ``"sst2"`` (negative/positive), or a path.
        split: for emgsd the ``corrsteer.tasks`` carve (``"train"`` by default, so that
            the task's test split stays unseen), for sst2 the official file (``"train"``);
            ``"all"`` takes every row. Not allowed for a file (every row is used).
        text_column, label_column, group_column: the file's columns (files only).
        groups: keep only rows of these groups (e.g. ``{"gender"}``).
        n: draw this many rows (seeded, without replacement); None = all.
        seed: seed of the draw.
        data_dir: datasets root (see :mod:`corrsteer.tasks.data`); None = default search.

    Returns:
        :class:`LabelledTexts`, checked by :func:`check_labelled`.

    Raises:
        ValueError: unknown split, missing column, empty file, empty text, fewer than two
            labels, a group filter that matches nothing, ``n`` larger than the data.
    """
    if dataset in DATASETS:
        split = split or "train"
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        texts, labels, grp, source = (_read_emgsd if dataset == "emgsd" else _read_sst2)(split, data_dir)
    else:
        if split is not None:
            raise ValueError(f"split={split!r} applies to {DATASETS} only; a file is used whole")
        texts, labels, grp, source = _read_file(dataset, text_column, label_column, group_column)
    if groups is not None:
        if grp is None:
            raise ValueError(f"groups={sorted(groups)} needs a group column; {source} has none "
                             "(pass group_column=...)")
        keep = [i for i, g in enumerate(grp) if g in set(groups)]
        if not keep:
            raise ValueError(f"no row of {source} is in groups {sorted(groups)}; groups present: "
                             f"{sorted({g for g in grp if g is not None})}")
        texts, labels, grp = [texts[i] for i in keep], [labels[i] for i in keep], [grp[i] for i in keep]
        source += f" groups={','.join(sorted(groups))}"
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int or None, got {n!r}")
        if n > len(texts):
            raise ValueError(f"n={n} but {source} has {len(texts)} rows; pass n <= {len(texts)}")
        order = np.random.default_rng(seed).permutation(len(texts))[:n]
        texts, labels = [texts[i] for i in order], [labels[i] for i in order]
        grp = None if grp is None else [grp[i] for i in order]
        source += f" n={n} seed={seed}"
    texts, labels, grp, _ = check_labelled(texts, labels, grp)
    return LabelledTexts(texts, labels, grp, source)


def _read_emgsd(split: str, data_dir: str | None) -> tuple[list[str], list[str], list[str], str]:
    from corrsteer.tasks.data import dataset_dir, read_csv
    from corrsteer.tasks.emgsd import LABELS

    path = dataset_dir("emgsd", "emgsd_sample.csv", data_dir) / "emgsd_sample.csv"
    rows = read_csv(path, ("text", "label", "category"))
    index = range(len(rows))
    if split != "all":  # the task's own carve, so that its test split stays unseen here
        from corrsteer.tasks import get_task

        ids = [s.id for s in get_task("emgsd", data_dir=data_dir).splits()[split]]
        prefix = f"emgsd/{path.name}:"
        if not all(i.startswith(prefix) for i in ids):
            raise CorrsteerError(f"EMGSD sample ids no longer look like {prefix!r}<row>; update "
                                 "corrsteer.labels._read_emgsd to the task's id format")
        index = sorted(int(i[len(prefix):]) for i in ids)
    texts, labels, groups = [], [], []
    for i in index:
        label = rows[i]["label"].strip()
        if label not in LABELS:
            raise ValueError(f"{path}:{i}: label {label!r} is not one of {LABELS}")
        texts.append(rows[i]["text"].strip())
        labels.append(label)
        groups.append(rows[i]["category"].strip() or "unrelated")
    return texts, labels, groups, f"{path} split={split}"


def _read_sst2(split: str, data_dir: str | None) -> tuple[list[str], list[str], None, str]:
    from corrsteer.tasks.data import dataset_dir, verify

    folder = dataset_dir("sst2", "*.tsv", data_dir)
    texts, labels = [], []
    for name in (SST2_FILES.values() if split == "all" else [SST2_FILES[split]]):
        path = folder / name
        if not path.is_file():
            raise ValueError(f"SST-2: {path} is missing; the folder needs {sorted(SST2_FILES.values())}")
        verify(path)
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            label, _, text = line.partition("\t")
            if label not in ("0", "1") or not text.strip():
                raise ValueError(f"{path}:{i + 1}: expected 'label<TAB>sentence' with label 0 or 1")
            texts.append(text.strip())
            labels.append(SST2_LABELS[int(label)])
    return texts, labels, None, f"{folder} split={split}"


def _read_file(path: str, text_column: str, label_column: str,
               group_column: str | None) -> tuple[list[str], list[str], list[str] | None, str]:
    from corrsteer.tasks.data import read_table

    needed = [text_column, label_column] + ([group_column] if group_column else [])
    rows = read_table(path, needed)
    if not rows:
        raise ValueError(f"{path}: no rows; a labelled file needs a header and at least two labels")
    for i, row in enumerate(rows):
        if not isinstance(row[text_column], str):
            raise ValueError(f"{path} row {i}: column {text_column!r} is {type(row[text_column]).__name__}, "
                             "not text; pass text_column= the column that holds the texts")
        if row[label_column] is None or str(row[label_column]).strip() == "":
            raise ValueError(f"{path} row {i}: empty label in column {label_column!r}")
    texts = [row[text_column].strip() for row in rows]
    labels = [str(row[label_column]).strip() for row in rows]
    groups = None if group_column is None else [str(row[group_column]).strip() or None for row in rows]
    return texts, labels, groups, str(path)


def check_labelled(texts: Sequence[str], labels: Sequence[Any], groups: Sequence[Any] | None = None
                   ) -> tuple[list[str], list[str], list[str] | None, list[str]]:
    """Check texts and labels; return them as lists of str and the sorted label names.

    Raises:
        TypeError: a text that is not a str.
        ValueError: empty data, an empty text, lengths that differ, fewer than two labels.
    """
    if isinstance(texts, str) or isinstance(labels, str):
        raise TypeError("texts and labels must be sequences (one entry per text), not a single str")
    texts, labels = list(texts), list(labels)
    if not texts:
        raise ValueError("texts is empty; give at least two labelled texts")
    if len(labels) != len(texts):
        raise ValueError(f"labels has {len(labels)} entries but texts has {len(texts)}; give one label per text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}; texts must be str")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty; drop empty rows before correlating")
    labels = [str(y) for y in labels]
    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError(f"every text has the label {names[0]!r}; one-vs-rest correlation needs at "
                         "least two labels (check the label column or the group filter)")
    if groups is not None:
        groups = [None if g is None else str(g) for g in groups]
        if len(groups) != len(texts):
            raise ValueError(f"groups has {len(groups)} entries but texts has {len(texts)}")
    return texts, labels, groups, names


# ------------------------------------------------------------------------ pooled activations


def _check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return pool


def _check_sets(model: Any, sae_sets: Mapping[str, Mapping[int, Any]]) -> list[tuple[int, str]]:
    """Validate ``{set: {layer: SAE}}`` against the model; return the sorted (layer, site) keys."""
    n_layers, width = len(find_layers(model)), d_model(model)
    keys = set()
    for name, saes in sae_sets.items():
        if not isinstance(saes, Mapping) or not saes:
            raise ValueError(f"SAE set {name!r} must be a non-empty {{layer: SAE}} mapping")
        for layer, sae in saes.items():
            what = f"SAE set {name!r}, layer {layer}"
            if not hasattr(sae, "encode_pooled") or not hasattr(sae, "d_in"):
                raise TypeError(f"{what} is a {type(sae).__name__}; pass a corrsteer.SAE")
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n_layers:
                raise ValueError(f"{what}: layer must be an int in 0..{n_layers - 1} (the model has "
                                 f"{n_layers} decoder layers)")
            if getattr(sae, "layer", None) is not None and int(sae.layer) != int(layer):
                raise ValueError(f"{what}: the SAE says it reads layer {sae.layer}; key it by its own layer")
            if width is not None and int(sae.d_in) != width:
                raise ValueError(f"{what} has d_in={sae.d_in} but the model has d_model={width}; "
                                 "load the SAE trained for this model")
            keys.add((int(layer), check_site(getattr(sae, "site", None) or "resid_post", what)))
    return sorted(keys, key=lambda k: (k[0], k[1] != "resid_pre"))


def _encode_batch(tokenizer: Any, texts: Sequence[str], max_length: int,
                  device: torch.device) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Right-padded inputs and the (n_seq, n_tok) bool mask of each text's own tokens."""
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                    padding_side="right", return_special_tokens_mask=True)
    keep = enc["attention_mask"].bool()
    special = enc.pop("special_tokens_mask", None)
    if special is not None:
        keep &= ~special.bool()
    elif tokenizer.bos_token_id is not None:
        keep &= enc["input_ids"] != tokenizer.bos_token_id
    empty = np.flatnonzero(~keep.any(dim=1).numpy())
    if empty.size:
        raise ValueError(f"text {texts[int(empty[0])]!r} has no token left once special tokens are "
                         "removed; drop empty rows")
    inputs = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
    return inputs, keep.numpy()


@torch.no_grad()
def iter_pooled(model: Any, tokenizer: Any, sae_sets: Mapping[str, Mapping[int, Any]], texts: Sequence[str],
                *, pool: str = "max", batch_size: int = 16, max_length: int = 128,
                progress: bool = True) -> Iterator[tuple[np.ndarray, dict[str, dict[int, np.ndarray]]]]:
    """Pool every SAE set's activations over each text, one forward pass per batch.

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        sae_sets: ``{set name: {layer: SAE}}``; each SAE is read at its own site.
        texts: the texts; each is truncated to ``max_length`` tokens (special tokens included).
        pool: ``"max"`` or ``"mean"`` over the text's tokens.
        batch_size: texts per forward pass (batches are formed in order of length).
        max_length: token budget per text.
        progress: show a tqdm bar.

    Yields:
        ``(index, {set: {layer: z}})`` per batch: ``index`` (n_seq,) int64 positions in
        ``texts``, ``z`` (n_seq, d_sae) float32 pooled activations in that order.
    """
    _check_pool(pool)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    keys = _check_sets(model, sae_sets)
    layers = find_layers(model)
    device = next(iter(model.parameters()), torch.empty(0)).device
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    bar = tqdm(total=len(texts), desc="label correlation", unit="text", disable=not progress)
    try:
        for start in range(0, len(texts), batch_size):
            index = order[start:start + batch_size].astype(np.int64)
            inputs, keep = _encode_batch(tokenizer, [texts[i] for i in index], max_length, device)
            seen = read_sites(model, layers, keys, **inputs)
            hidden = {k: v.to(device="cpu", dtype=torch.float32).numpy() for k, v in seen.items()}
            seen.clear()
            pooled = {name: {layer: sae.encode_pooled(hidden[(int(layer), getattr(sae, "site", None) or
                                                               "resid_post")], keep, mode=pool)
                             for layer, sae in saes.items()} for name, saes in sae_sets.items()}
            bar.update(len(index))
            yield index, pooled
    finally:
        bar.close()


def pool_texts(model: Any, tokenizer: Any, saes: Mapping[int, Any], texts: Sequence[str], *,
               pool: str = "max", batch_size: int = 16, max_length: int = 128,
               progress: bool = False) -> dict[int, np.ndarray]:
    """``{layer: (n_texts, d_sae) float32}``: pooled activations of every text, in text order."""
    out: dict[int, np.ndarray] = {}
    for index, pooled in iter_pooled(model, tokenizer, {"sae": saes}, texts, pool=pool, batch_size=batch_size,
                                     max_length=max_length, progress=progress):
        for layer, z in pooled["sae"].items():
            if layer not in out:
                out[layer] = np.zeros((len(texts), z.shape[1]), np.float32)
            out[layer][index] = z
    return out


# ------------------------------------------------------------------------------ results


def _new_accumulator(d_sae: int) -> Any:
    from corrsteer.correlation import CorrelationAccumulator

    return CorrelationAccumulator(int(d_sae))


@dataclass
class LabelCorrelations:
    """One-vs-rest correlation state: ``{label: {layer: CorrelationAccumulator}}``.

    Attributes:
        accumulators: label -> layer -> accumulator fed with ``y = 1[label == k]``.
        counts: label -> number of texts with that label.
        meta: how the state was made (pool, max_length, source, groups, model, SAE).
        null: the same with the labels shuffled (seeded), a chance level; or None.
    """

    accumulators: dict[str, dict[int, Any]]
    counts: dict[str, int]
    meta: dict[str, Any] = field(default_factory=dict)
    null: dict[str, dict[int, Any]] | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.accumulators)

    @property
    def layers(self) -> list[int]:
        return sorted(next(iter(self.accumulators.values())))

    @property
    def n(self) -> int:
        return int(sum(self.counts.values()))

    def _acc(self, label: str, layer: int, null: bool = False) -> Any:
        source = self.null if null else self.accumulators
        if source is None:
            raise ValueError("no null (shuffled-label) accumulators were kept; pass null_seed= when collecting")
        if label not in source:
            raise ValueError(f"unknown label {label!r}; the labels are {self.labels}")
        if layer not in source[label]:
            raise ValueError(f"no accumulator for layer {layer}; the layers are {self.layers}")
        return source[label][layer]

    def top(self, label: str, layer: int, k: int = 10, sign: str = "positive") -> list[dict[str, Any]]:
        """The ``k`` features with the largest ``r > 0`` (``sign="negative"``: smallest ``r < 0``).

        Returns:
            Up to ``k`` dicts ``{index, r, coefficient, frequency, frequency_label}``:
            ``coefficient`` is the mean pooled activation over the label's texts,
            ``frequency`` the fraction of all texts where the feature fires,
            ``frequency_label`` the fraction of the label's texts where it fires.
        """
        acc = self._acc(label, layer)
        rows = acc.top(min(int(k), acc.d_sae), sign)
        freq = acc.frequency()
        coef, coef_active = acc.coefficient(), acc.coefficient(active_only=True)
        out = []
        for row in rows:
            i = int(row["index"])
            out.append({"index": i, "r": float(row["r"]), "coefficient": float(row["coefficient"]),
                        "frequency": float(freq[i]),
                        "frequency_label": float(coef[i] / coef_active[i]) if coef_active[i] > 0 else 0.0})
        return out

    def table(self, k: int = 5, sign: str = "positive") -> list[dict[str, Any]]:
        """Rows ``{label, layer, rank, index, r, coefficient, frequency, frequency_label}``."""
        return [{"label": label, "layer": layer, "rank": rank, **row}
                for label in self.labels for layer in self.layers
                for rank, row in enumerate(self.top(label, layer, k, sign), 1)]

    def best(self, label: str, null: bool = False) -> dict[str, Any]:
        """The feature with the largest ``|r|`` over every layer: ``{layer, index, r}``."""
        best = {"layer": None, "index": None, "r": 0.0}
        for layer in self.layers:
            r = self._acc(label, layer, null).correlation()
            i = int(np.argmax(np.abs(r)))
            if best["layer"] is None or abs(r[i]) > abs(best["r"]):
                best = {"layer": layer, "index": i, "r": float(r[i])}
        return best

    def markdown(self, k: int = 5, sign: str = "positive") -> str:
        """The :meth:`table` as markdown, one section per label."""
        lines = []
        for label in self.labels:
            lines += [f"### {label} (n={self.counts[label]} of {self.n})", "",
                      "| layer | rank | feature | r | coefficient | freq (all) | freq (label) |",
                      "|---|---|---|---|---|---|---|"]
            for row in self.table(k, sign):
                if row["label"] == label:
                    lines.append(f"| {row['layer']} | {row['rank']} | {row['index']} | {row['r']:+.3f} | "
                                 f"{row['coefficient']:.3g} | {row['frequency']:.2f} | {row['frequency_label']:.2f} |")
            lines.append("")
        return "\n".join(lines)

    def save(self, directory: str | Path, k: int = 10) -> Path:
        """Write ``labels.json`` (summary + top-``k`` table) and ``acc/*.bin`` under ``directory``."""
        root = Path(directory)
        (root / "acc").mkdir(parents=True, exist_ok=True)
        files: dict[str, dict[str, dict[str, str]]] = {"labels": {}, "null": {}}
        for kind, source in (("labels", self.accumulators), ("null", self.null or {})):
            for j, label in enumerate(source):
                files[kind][label] = {}
                for layer, acc in source[label].items():
                    name = f"acc/{kind}{j}_layer{layer}.bin"
                    acc.save(root / name)
                    files[kind][label][str(layer)] = name
        summary = {"format": "corrsteer.labels/1", "labels": self.labels, "counts": self.counts, "n": self.n,
                   "layers": self.layers, "meta": self.meta, "files": files, "top": self.table(k)}
        return write_json(root / "labels.json", summary, indent=1)

    @classmethod
    def load(cls, directory: str | Path) -> LabelCorrelations:
        """Read what :meth:`save` wrote; ValueError naming the file when something is missing."""
        from corrsteer.correlation import CorrelationAccumulator

        root = Path(directory)
        path = root / "labels.json"
        if not path.is_file():
            raise ValueError(f"{path} does not exist; pass the folder written by LabelCorrelations.save")
        try:
            summary = json.loads(path.read_text())
            files, counts = summary["files"], {str(k): int(v) for k, v in summary["counts"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a labels.json written by corrsteer ({exc})") from exc
        state: dict[str, dict[str, dict[int, Any]]] = {}
        for kind in ("labels", "null"):
            state[kind] = {}
            for label, by_layer in files.get(kind, {}).items():
                state[kind][label] = {}
                for layer, name in by_layer.items():
                    if not (root / name).is_file():
                        raise ValueError(f"{root / name} is missing; {path} lists it")
                    state[kind][label][int(layer)] = CorrelationAccumulator.load(root / name)
        return cls(state["labels"], counts, summary.get("meta", {}), state["null"] or None)


def label_correlations(model: Any, tokenizer: Any, saes: Mapping[int, Any], texts: Sequence[str],
                       labels: Sequence[Any], *, groups: Sequence[Any] | None = None,
                       keep_groups: Collection[str] | None = None, pool: str = "max", batch_size: int = 16,
                       max_length: int = 128, null_seed: int | None = None,
                       progress: bool = True) -> LabelCorrelations:
    """One-vs-rest correlation of pooled SAE activations with each label (METHOD.md §7).

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        saes: ``{layer: SAE}``, each read at its own site.
        texts: (n_texts,) the texts, read as they are (no template).
        labels: (n_texts,) one label per text (converted to str); at least two distinct.
        groups: (n_texts,) optional group of each text (e.g. EMGSD category).
        keep_groups: use only the texts whose group is in this set (needs ``groups``).
        pool: ``"max"`` or ``"mean"`` over the text's tokens (padding and BOS excluded).
        batch_size, max_length: texts per forward pass, tokens per text.
        null_seed: also keep accumulators with the labels shuffled by this seed (chance level).
        progress: show a tqdm bar.

    Returns:
        :class:`LabelCorrelations` with one accumulator per label and layer.
    """
    return correlate_sets(model, tokenizer, {"sae": saes}, texts, labels, groups=groups, keep_groups=keep_groups,
                          pool=pool, batch_size=batch_size, max_length=max_length, null_seed=null_seed,
                          progress=progress)["sae"]


def correlate_sets(model: Any, tokenizer: Any, sae_sets: Mapping[str, Mapping[int, Any]], texts: Sequence[str],
                   labels: Sequence[Any], *, groups: Sequence[Any] | None = None,
                   keep_groups: Collection[str] | None = None, pool: str = "max", batch_size: int = 16,
                   max_length: int = 128, null_seed: int | None = None,
                   progress: bool = True) -> dict[str, LabelCorrelations]:
    """:func:`label_correlations` for several SAE sets over one forward pass per batch.

    Returns:
        ``{set name: LabelCorrelations}``.
    """
    texts, labels, groups, names = check_labelled(texts, labels, groups)
    if keep_groups is not None:
        if groups is None:
            raise ValueError("keep_groups needs groups= (the group of each text)")
        keep = [i for i, g in enumerate(groups) if g in set(keep_groups)]
        if not keep:
            raise ValueError(f"no text is in keep_groups {sorted(keep_groups)}")
        texts, labels, groups, names = check_labelled([texts[i] for i in keep], [labels[i] for i in keep],
                                                      [groups[i] for i in keep])
    y_all = np.asarray(labels)
    y_null = None if null_seed is None else y_all[np.random.default_rng(null_seed).permutation(len(y_all))]
    accs = {s: {k: {l: _new_accumulator(sae.d_sae) for l, sae in saes.items()} for k in names}
            for s, saes in sae_sets.items()}
    nulls = None if y_null is None else {s: {k: {l: _new_accumulator(sae.d_sae) for l, sae in saes.items()}
                                             for k in names} for s, saes in sae_sets.items()}
    t0 = time.perf_counter()
    for index, pooled in iter_pooled(model, tokenizer, sae_sets, texts, pool=pool, batch_size=batch_size,
                                     max_length=max_length, progress=progress):
        for s, by_layer in pooled.items():
            for layer, z in by_layer.items():
                for k in names:
                    accs[s][k][layer].update(z, (y_all[index] == k).astype(np.float32))
                    if nulls is not None:
                        nulls[s][k][layer].update(z, (y_null[index] == k).astype(np.float32))
    seconds = time.perf_counter() - t0
    counts = {k: int((y_all == k).sum()) for k in names}
    meta = {"pool": pool, "max_length": max_length, "n": len(texts), "seconds": round(seconds, 2),
            "keep_groups": None if keep_groups is None else sorted(keep_groups), "null_seed": null_seed,
            "tokens": "text tokens only: padding and tokenizer-added special tokens (BOS) excluded"}
    if groups is not None:
        meta["group_counts"] = {g: groups.count(g) for g in sorted({g for g in groups if g is not None})}
    log.info("label correlation: %d texts, labels %s, %d SAE set(s), %.1f s", len(texts), counts,
             len(sae_sets), seconds)
    return {s: LabelCorrelations(accs[s], counts, dict(meta), None if nulls is None else nulls[s])
            for s in sae_sets}


# --------------------------------------------------------------------------- command line


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The options shared by ``corrsteer labels`` and ``corrsteer compare-saes``."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="emgsd | sst2 | a CSV/TSV/JSONL/JSON file")
    g.add_argument("--split", help="emgsd/sst2: train (default) | validation | test | all")
    g.add_argument("--text-column", default="text", help="files: the text column (text)")
    g.add_argument("--label-column", default="label", help="files: the label column (label)")
    g.add_argument("--group-column", help="files: a group column for --groups")
    g.add_argument("--groups", help="keep only these groups, comma-separated (emgsd: its categories)")
    g.add_argument("--n", type=int, help="draw this many rows (seeded); default all")
    g.add_argument("--seed", type=int, default=0, help="seed of the draw (0)")
    g.add_argument("--data-dir", help="datasets root (default: ../shared/datasets or $CORRSTEER_DATA)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="gemma-3-270m", help="embedded name, HF folder, .gguf or hub id")
    g.add_argument("--device", help="torch device (default: cuda if available)")
    g.add_argument("--layers", help="layers: 3,6,9 | 2-5 | all (default: every SAE's layer)")
    g.add_argument("--pool", default="max", choices=POOLS, help="pooling over the text's tokens (max)")
    g.add_argument("--batch-size", type=int, default=16, help="texts per forward pass (16)")
    g.add_argument("--max-length", type=int, default=128, help="tokens per text (128)")
    g.add_argument("--out", help="output folder")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)")
    g.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def data_from_args(args: argparse.Namespace) -> LabelledTexts:
    """:func:`load_labelled` with the options of :func:`add_data_options`."""
    groups = None if not args.groups else {g.strip() for g in args.groups.split(",") if g.strip()}
    group_column = args.group_column
    return load_labelled(args.dataset, split=args.split, text_column=args.text_column,
                         label_column=args.label_column, group_column=group_column, groups=groups,
                         n=args.n, seed=args.seed, data_dir=args.data_dir)


def run_cli(argv: Sequence[str] | None, parser: argparse.ArgumentParser, body: Any) -> int:
    """Parse, set up logging, run ``body(args)``; user errors exit 2, library errors 1."""
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    from corrsteer.cli import report_errors

    return report_errors(lambda: body(args), args.debug, f"corrsteer {parser.prog.split()[-1]}")


def _labels_body(args: argparse.Namespace) -> None:
    from corrsteer.cli import parse_layers
    from corrsteer.models import load_model, model_id
    from corrsteer.pipeline import load_saes

    layers = parse_layers(args.layers)
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    t0 = time.perf_counter()
    data = data_from_args(args)  # bad data fails before the model loads
    model, tokenizer = load_model(args.model, device=args.device)
    saes = load_saes(args.sae, model, tokenizer, layers)
    lc = label_correlations(model, tokenizer, saes, data.texts, data.labels, groups=data.groups, pool=args.pool,
                            batch_size=args.batch_size, max_length=args.max_length, progress=args.progress)
    lc.meta.update({"source": data.source, "model": model_id(model), "sae": args.sae, "command": args.command_line,
                    "total_s": round(time.perf_counter() - t0, 1)})
    out = Path(args.out or f"runs/labels_{Path(args.dataset).stem}")
    lc.save(out, k=max(args.top_k, 10))
    text = (f"# Label features: {data.source}\n\nmodel {lc.meta['model']} · SAE {args.sae} · pool {args.pool} · "
            f"{lc.n} texts {lc.counts} · {lc.meta['seconds']:.0f} s (total {lc.meta['total_s']:.0f} s)\n\n"
            f"`{args.command_line}`\n\n" + lc.markdown(args.top_k))
    (out / "labels.md").write_text(text)
    print(text)
    print(f"saved {out / 'labels.json'}, {out / 'labels.md'} and {out / 'acc'}")


def main_labels(argv: Sequence[str] | None = None) -> int:
    """``corrsteer labels``: per label and layer, the SAE features that fire for the label.

    Example::

        corrsteer labels --dataset emgsd --model gemma-3-270m --sae default --n 2000 --out runs/labels_emgsd

    Prints the top features (r, coefficient, frequency) per label and layer and saves
    ``labels.json``, ``labels.md`` and the accumulators under ``--out``.
    """
    p = argparse.ArgumentParser(prog="corrsteer labels",
                                description="Per label and layer, the SAE features that fire for the label.")
    add_data_options(p)
    p.add_argument("--sae", default="default",
                   help="'default' (the model's trained SAEs) or SAE paths, comma-separated")
    p.add_argument("--top-k", type=int, default=5, help="features shown per label and layer (5)")
    argv = list(sys.argv[1:] if argv is None else argv)
    p.set_defaults(command_line=" ".join(["corrsteer labels", *argv]))
    return run_cli(argv, p, _labels_body)
