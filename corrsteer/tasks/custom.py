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

import os
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

from corrsteer.tasks.base import SPLITS, Sample, carve
from corrsteer.tasks.choice import MultipleChoiceTask, format_options
from corrsteer.tasks.data import read_table_rows

FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
                 "val": "validation", "test": "test"}


def template_fields(template: object) -> list[str]:
    """The column names a ``str.format`` template reads (``{options}`` excluded), in order of first use.

    Raises:
        TypeError: ``template`` is not a non-empty str.
        ValueError: the template is malformed (``{text``, a lone ``}``), has a positional field
            (``{}``, ``{0}``), an attribute or index (``{text.upper}``, ``{a[0]}``) or no field at all.
    """
    if not isinstance(template, str) or not template:
        raise TypeError(f"template must be a non-empty str such as 'Review: {{text}}', got {template!r}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template {template!r} is malformed ({exc}); write {{column}} for a column's value "
                         "and {{{{ }}}} for literal braces") from None
    fields: list[str] = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            what = "a positional field" if name == "" or name.isdigit() else "an attribute or index"
            raise ValueError(f"template {template!r} has {what} {{{name}}}; name a column instead, e.g. {{text}}")
        if spec and "{" in spec:
            raise ValueError(f"template {template!r}: nested fields in a format spec are not supported")
        if name != "options" and name not in fields:
            fields.append(name)
    if not fields:
        raise ValueError(f"template {template!r} reads no column; put one in braces, e.g. 'Review: {{text}}'")
    return fields


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


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
        max_new_tokens: generation budget (default 6), a positive integer.

    Every value the task reads must be one: a label, a split or a category is a non-empty
    string, a number or a boolean, and a template field is a string or a number. A JSON
    ``null``, list or object, an empty label, or a CSV row with fewer or more fields than
    the header is refused with the file, the line (or item) and the column named, never
    turned into ``"None"`` or into an extra answer option.
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
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise TypeError(f"path must be a file path, got {path!r}")
        self.fields = template_fields(template)
        for name, value in (("label_column", label_column), ("category_column", category_column),
                            ("split_column", split_column), ("task_name", task_name), ("header", header)):
            if value is None and name not in ("label_column", "task_name", "header"):
                continue
            if not isinstance(value, str) or (not value and name != "header"):
                raise TypeError(f"{name} must be a non-empty str, got {value!r}")
        self.path = Path(path).expanduser()
        if not self.path.is_absolute() and data_dir is not None:
            self.path = Path(data_dir) / self.path
        self.template = template
        self.show_options = "{options}" not in template
        self.label_column = label_column
        self.labels = self._check_labels(labels)
        self.header_text = header
        self.category_column = category_column
        self.split_column = split_column
        self.name = task_name
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)

    @staticmethod
    def _check_labels(labels: object) -> Sequence[str] | Mapping[str, str] | None:
        if labels is None:
            return None
        if isinstance(labels, str) or not isinstance(labels, (Mapping, Sequence)):
            raise TypeError(f"labels must be a list of label values or a mapping value -> shown text, got {labels!r}")
        keys = list(labels)
        shown = list(labels.values()) if isinstance(labels, Mapping) else keys
        for v in keys + shown:
            if isinstance(v, (list, dict, tuple)) or v is None or not str(v).strip():
                raise ValueError(f"labels={labels!r}: every label must be a non-empty string or number")
        if len({str(v).strip() for v in keys}) != len(keys) or len({str(v).strip() for v in shown}) != len(shown):
            raise ValueError(f"labels={labels!r} lists a label twice")
        return labels

    def source(self) -> str:
        return str(self.path)

    def header(self, sample: Sample) -> str:
        return self.header_text

    def base_prompt(self, sample: Sample) -> str:
        body = self.body(sample)
        return body if body.rstrip().lower().endswith("answer:") else f"{body}\nAnswer:"

    def _label_map(self, labels: list[str]) -> tuple[list[str], tuple[str, ...]]:
        if self.labels is None:
            values = sorted(set(labels))
            return values, tuple(values)
        if isinstance(self.labels, Mapping):
            return [str(k).strip() for k in self.labels], tuple(str(v) for v in self.labels.values())
        values = [str(v).strip() for v in self.labels]
        return values, tuple(values)

    def _value(self, row: dict, column: str, where: str, label: bool) -> str:
        """The row's value in ``column`` as text; anything that is not one value is a ValueError."""
        value = row.get(column)
        ok = isinstance(value, (str, int, float)) and not (label and isinstance(value, float) and value != value)
        if not ok or (label and not str(value).strip()):
            kind = "empty" if isinstance(value, str) else ("null" if value is None else type(value).__name__)
            need = "a non-empty string or a number" if label else "a string or a number"
            raise ValueError(f"{where}: column {column!r} is {kind} ({value!r}); it must be {need}")
        return str(value).strip() if label else str(value)

    def load_splits(self) -> dict[str, list[Sample]]:
        needed = [self.label_column, *self.fields]
        needed += [c for c in (self.category_column, self.split_column) if c is not None]
        rows = read_table_rows(self.path, dict.fromkeys(needed))
        if not rows:
            raise ValueError(f"{self.path}: no rows")
        labels = [self._value(row, self.label_column, where, label=True) for where, row in rows]
        values, options = self._label_map(labels)
        if len(values) < 2:
            raise ValueError(f"{self.path}: need at least 2 labels in column {self.label_column!r}, found {values}")
        shown = {} if self.show_options else {"options": format_options(options)}
        samples, split_of = [], {}
        for i, ((where, row), label) in enumerate(zip(rows, labels)):
            if label not in values:
                raise ValueError(f"{where}: label {label!r} is not one of the labels {values}; "
                                 "add it to labels= or fix the row")
            target = values.index(label)
            fields = {k: self._value(row, k, where, label=False) for k in self.fields}
            try:
                text = self.template.format(**fields, **shown)
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise ValueError(f"{where}: template {self.template!r} cannot format the row "
                                 f"({type(exc).__name__}: {exc})") from None
            category = (self._value(row, self.category_column, where, label=True) if self.category_column
                        else options[target])
            sid = f"{self.path.name}:{i}"
            samples.append(self.check_sample(Sample(id=sid, question=text.strip(), target=target,
                                                    options=options, category=category, meta={"label": label})))
            if self.split_column is not None:
                raw = self._value(row, self.split_column, where, label=True)
                split = SPLIT_ALIASES.get(raw.lower())
                if split is None:
                    raise ValueError(f"{where}: split {raw!r} must be one of {sorted(SPLIT_ALIASES)}")
                split_of[sid] = split
        if self.split_column is None:
            return carve(samples, FRACTIONS, self.split_seed, key=lambda s: s.target)
        return {split: [s for s in samples if split_of[s.id] == split] for split in SPLITS}
