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
pass stops after the deepest SAE site (the LM head never runs).

This module holds the pooled activations (:func:`iter_pooled`, :func:`pool_texts`) and
the correlation results (:func:`label_correlations`, :func:`correlate_sets`,
:class:`LabelCorrelations`). The data sources are :mod:`corrsteer.studies.labelled`, the
command line :mod:`corrsteer.cli.labels`, comparing SAEs :mod:`corrsteer.studies.sae_comparison`.

Example:
    >>> from corrsteer.studies.labelled import load_labelled
    >>> data = load_labelled("emgsd", n=2000, seed=0)                       # doctest: +SKIP
    >>> lc = label_correlations(model, tok, saes, data.texts, data.labels)   # doctest: +SKIP
    >>> lc.top("stereotype", layer=6, k=1)                                   # doctest: +SKIP
    [{'index': 1234, 'r': 0.41, 'coefficient': 7.2, 'frequency': 0.35, 'frequency_label': 0.81}]
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from corrsteer.config import POOLS, check_choice
from corrsteer.core import CorrelationAccumulator
from corrsteer.models.sites import check_site, read_sites
from corrsteer.models import d_model, find_layers
from corrsteer.storage.atomic import write_json
from corrsteer.studies.labelled import check_labelled

log = logging.getLogger(__name__)

__all__ = ["LabelCorrelations", "correlate_sets", "iter_pooled", "label_correlations", "pool_texts"]


# ------------------------------------------------------------------------ pooled activations


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
    """Right-padded inputs and the (n_seq, n_tok) bool mask of each text's own tokens.

    Position 0 is never pooled: it is BOS, or, for a tokenizer that adds none (SmolLM2),
    the first word, which the model turns into an attention sink with a residual norm
    ~100x the others. The default SAEs are trained without it (``sae.harvest``).
    """
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                    padding_side="right", return_special_tokens_mask=True)
    keep = enc["attention_mask"].bool()
    special = enc.pop("special_tokens_mask", None)
    if special is not None:
        keep &= ~special.bool()
    elif tokenizer.bos_token_id is not None:
        keep &= enc["input_ids"] != tokenizer.bos_token_id
    keep[:, 0] = False  # right padding: column 0 is each text's first position
    empty = np.flatnonzero(~keep.any(dim=1).numpy())
    if empty.size:
        raise ValueError(f"text {texts[int(empty[0])]!r} has no token left once special tokens and the first "
                         "position (the attention sink) are removed; drop empty or one-token rows")
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
    check_choice("pool", pool, POOLS)
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

    def chance(self, label: str, layer: int, sign: str = "positive") -> float:
        """The top ``r`` of ``sign`` at ``layer`` with the labels shuffled (needs ``null``)."""
        r = self._acc(label, layer, null=True).correlation()
        return float(r.max() if sign == "positive" else r.min())

    def markdown(self, k: int = 5, sign: str = "positive") -> str:
        """The :meth:`table` as markdown, one section per label."""
        lines = []
        for label in self.labels:
            lines += [f"### {label} (n={self.counts[label]} of {self.n})", ""]
            if self.null:
                chance = ", ".join(f"L{layer} {self.chance(label, layer, sign):+.3f}" for layer in self.layers)
                lines += [f"Chance level, the top r with the labels shuffled (seed {self.meta.get('null_seed')}): "
                          f"{chance}. A feature below its layer's chance level is indistinguishable from noise.", ""]
            lines += ["| layer | rank | feature | r | coefficient | freq (all) | freq (label) |",
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
        summary = {"format": "corrsteer.studies.labels/1", "labels": self.labels, "counts": self.counts, "n": self.n,
                   "layers": self.layers, "meta": self.meta, "files": files, "top": self.table(k)}
        return write_json(root / "labels.json", summary, indent=1)

    @classmethod
    def load(cls, directory: str | Path) -> LabelCorrelations:
        """Read what :meth:`save` wrote; ValueError naming the file when something is missing."""
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
