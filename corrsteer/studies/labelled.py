"""Labelled text datasets: texts with one label each, read from EMGSD, SST-2 or a file.

:func:`load_labelled` reads ``(text, label)`` pairs (and optionally a group per text):
EMGSD (``stereotype`` / ``neutral`` / ``unrelated``, group = category; the train split is
the ``corrsteer.tasks`` carve so that the task's test split stays unseen), SST-2
(``negative`` / ``positive``) or any CSV/TSV/JSONL/JSON file, with an optional group
filter and a seeded draw of ``n`` rows. :func:`check_labelled` checks texts and labels
given directly. The texts feed label correlation (:mod:`corrsteer.studies.labels`, METHOD.md §7).

Example:
    >>> from corrsteer.studies.labelled import load_labelled
    >>> data = load_labelled("emgsd", n=2000, seed=0)                       # doctest: +SKIP
    >>> data.labels[:3], data.groups[:3]                                     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from corrsteer.errors import CorrsteerError

DATASETS = ("emgsd", "sst2")
SPLITS = ("train", "validation", "test", "all")
SST2_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
SST2_LABELS = ("negative", "positive")

__all__ = ["DATASETS", "SPLITS", "LabelledTexts", "check_labelled", "load_labelled"]


@dataclass
class LabelledTexts:
    """Texts with one label each (and optionally a group, e.g. EMGSD's category)."""

    texts: list[str]                 # the texts, read as they are (no template)
    labels: list[str]                # one label per text
    groups: list[str] | None = None  # one group per text, or None
    source: str = ""                 # where the rows came from (file and split)


def load_labelled(dataset: str, *, split: str | None = None, text_column: str = "text",
                  label_column: str = "label", group_column: str | None = None,
                  groups: Collection[str] | None = None, keep_labels: Collection[str] | None = None,
                  n: int | None = None, seed: int = 0, data_dir: str | None = None) -> LabelledTexts:
    """Read a labelled text dataset: ``"emgsd"``, ``"sst2"`` or a CSV/TSV/JSONL/JSON file.

    Args:
        dataset: ``"emgsd"`` (label = stereotype/neutral/unrelated, group = category,
            ``"unrelated"`` for unrelated rows), ``"sst2"`` (negative/positive), or a path.
        split: for emgsd the ``corrsteer.tasks`` carve (``"train"`` by default, so that
            the task's test split stays unseen), for sst2 the official file (``"train"``);
            ``"all"`` takes every row. Not allowed for a file (every row is used).
        text_column, label_column, group_column: the file's columns (files only).
        groups: keep only rows of these groups (e.g. ``{"gender"}``).
        keep_labels: keep only rows with these labels, e.g. ``{"stereotype", "neutral"}``
            for a two-way contrast (one-vs-rest over three EMGSD labels also separates
            "about a group" from "unrelated", which is not the bias contrast).
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
    if keep_labels is not None:
        wanted = {str(k) for k in keep_labels}
        missing = sorted(wanted - set(labels))
        if missing:
            raise ValueError(f"keep_labels {missing} not in {source}; its labels: {sorted(set(labels))}")
        keep = [i for i, label in enumerate(labels) if label in wanted]
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
        grp = None if grp is None else [grp[i] for i in keep]
        source += f" labels={','.join(sorted(wanted))}"
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
                                 "corrsteer.studies.labelled._read_emgsd to the task's id format")
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
