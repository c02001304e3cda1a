"""A classification task from any CSV/TSV/JSONL file: a template, a label column, done.

"A text classification dataset can steer a model" in one command::

    corrsteer run --task custom --task-option path=reviews.csv \
        --task-option template="Review: {text}" --task-option label_column=sentiment

or in Python ``get_task("custom", path="reviews.csv", template="Review: {text}",
label_column="sentiment")``. Each row becomes a multiple-choice sample: the template
filled with the row's columns, then the labels as lettered options, then ``Answer:``
(or, if the template contains ``{options}``, the lettered list goes there instead; a
template that already ends in ``Answer:`` gets no second cue).
The model may answer with the letter or the label text; reward 1 iff it names the row's
label.

Splits: a ``split_column`` with values ``train`` / ``validation`` (or ``dev``) / ``test``
is used as is; otherwise the rows are carved with ``split_seed``, stratified by label,
70/10/20.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from pathlib import Path

from corrsteer.tasks.base import SPLITS, Sample, carve
from corrsteer.tasks.choice import MultipleChoiceTask, format_options
from corrsteer.tasks.data import read_table

FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
                 "val": "validation", "test": "test"}


class CustomTask(MultipleChoiceTask):
    """Classification from a user file: template + label column -> lettered options.

    Options:
        path: the CSV / TSV / JSONL / JSON file (required).
        template: ``str.format`` template over the row's columns, e.g. ``"Review: {text}"``;
            may contain ``{options}``.
        label_column: column holding the label (required).
        labels: the label values in display order (a list), or a mapping value -> display
            text; None = the sorted distinct values found. A row whose label is not listed
            is an error.
        header: a line shown before every question (an instruction), optional.
        category_column: column used for per-category tables; default = the label.
        split_column: column naming each row's split; None = seeded 70/10/20 carve.
        task_name: the task's name in results (default ``"custom"``).
        max_new_tokens: generation budget (default 6).
    """

    name = "custom"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 path: str | None = None, template: str = "{text}", label_column: str = "label",
                 labels: Sequence[str] | Mapping[str, str] | None = None, header: str = "",
                 category_column: str | None = None, split_column: str | None = None,
                 task_name: str = "custom", max_new_tokens: int = 6) -> None:
        super().__init__(data_dir, split_seed, chat)
        if path is None:
            raise ValueError("custom task needs path='your_file.csv' (CSV, TSV, JSONL or JSON)")
        if not isinstance(template, str) or not template:
            raise TypeError("template must be a non-empty str such as 'Review: {text}'")
        self.path = Path(path).expanduser()
        if not self.path.is_absolute() and data_dir is not None:
            self.path = Path(data_dir) / self.path
        self.template = template
        self.fields = sorted({f for _, f, _, _ in string.Formatter().parse(template) if f} - {"options"})
        self.show_options = "{options}" not in template
        self.label_column = label_column
        self.labels = labels
        self.header_text = header
        self.category_column = category_column
        self.split_column = split_column
        self.name = task_name
        self.max_new_tokens = int(max_new_tokens)

    def source(self) -> str:
        return str(self.path)

    def header(self, sample: Sample) -> str:
        return self.header_text

    def base_prompt(self, sample: Sample) -> str:
        body = self.body(sample)
        return body if body.rstrip().lower().endswith("answer:") else f"{body}\nAnswer:"

    def _label_map(self, rows: list[dict]) -> tuple[list[str], tuple[str, ...]]:
        if self.labels is None:
            values = sorted({str(r[self.label_column]).strip() for r in rows})
            return values, tuple(values)
        if isinstance(self.labels, Mapping):
            return [str(k) for k in self.labels], tuple(str(v) for v in self.labels.values())
        if isinstance(self.labels, str):
            raise TypeError("labels must be a list of label values or a mapping, not a str")
        values = [str(v) for v in self.labels]
        return values, tuple(values)

    def load_splits(self) -> dict[str, list[Sample]]:
        needed = [self.label_column, *self.fields]
        needed += [c for c in (self.category_column, self.split_column) if c is not None]
        rows = read_table(self.path, needed)
        if not rows:
            raise ValueError(f"{self.path}: no rows")
        values, options = self._label_map(rows)
        if len(values) < 2:
            raise ValueError(f"{self.path}: need at least 2 labels in column {self.label_column!r}, found {values}")
        samples, split_of = [], {}
        for i, row in enumerate(rows):
            label = str(row[self.label_column]).strip()
            if label not in values:
                raise ValueError(f"{self.path} row {i}: label {label!r} is not one of the labels {values}; "
                                 "add it to labels= or fix the row")
            target = values.index(label)
            text = self.template.format(**{**{k: row[k] for k in self.fields},
                                           **({} if self.show_options else {"options": format_options(options)})})
            category = str(row[self.category_column]) if self.category_column else options[target]
            sid = f"{self.path.name}:{i}"
            samples.append(self.check_sample(Sample(id=sid, question=text.strip(), target=target,
                                                    options=options, category=category, meta={"label": label})))
            if self.split_column is not None:
                split = SPLIT_ALIASES.get(str(row[self.split_column]).strip().lower())
                if split is None:
                    raise ValueError(f"{self.path} row {i}: split {row[self.split_column]!r} must be one of "
                                     f"{sorted(SPLIT_ALIASES)}")
                split_of[sid] = split
        if self.split_column is None:
            return carve(samples, FRACTIONS, self.split_seed, key=lambda s: s.target)
        return {split: [s for s in samples if split_of[s.id] == split] for split in SPLITS}
