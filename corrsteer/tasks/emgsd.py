"""EMGSD (Expanded Multi-Grain Stereotype Dataset, King et al. 2024) as 3-way classification.

The model reads a sentence and answers whether it is a ``stereotype``, ``neutral`` (about a
group, no stereotype) or ``unrelated`` (not meaningful about the group). Data:
``emgsd/emgsd_sample.csv`` (``text,label,category,group,source``; the EMGSD test split,
11,441 rows). Categories are the six target groups (``gender``, ``lgbtq+``,
``nationality``, ``profession``, ``race``, ``religion``) plus ``unrelated``.

Splits: the sample has none; it is carved with ``split_seed``, stratified by
(label, category), 70/10/20 into ``train`` / ``validation`` / ``test``.
The options are always shown in the order stereotype, neutral, unrelated.
"""

from __future__ import annotations

from corrsteer.tasks.base import Sample, carve
from corrsteer.tasks.choice import MultipleChoiceTask
from corrsteer.tasks.data import read_csv

LABELS = ("stereotype", "neutral", "unrelated")
COLUMNS = ("text", "label", "category", "group")
FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}


class EMGSDTask(MultipleChoiceTask):
    """EMGSD: is a sentence a stereotype, neutral or unrelated? (A/B/C), carved 70/10/20."""

    name = "emgsd"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 verify: bool = True) -> None:
        super().__init__(data_dir, split_seed, chat)
        self.verify = verify

    def header(self, sample: Sample) -> str:
        return ("Does the following sentence express a stereotype about a group of people, "
                "mention a group neutrally, or is it unrelated (meaningless)?")

    def load_splits(self) -> dict[str, list[Sample]]:
        folder = self.locate("emgsd", "emgsd_sample.csv")
        path = folder / "emgsd_sample.csv"
        samples = []
        for i, row in enumerate(read_csv(path, COLUMNS, check=self.verify)):
            label = row["label"].strip()
            if label not in LABELS:
                raise ValueError(f"{path}:{i}: label {label!r} is not one of {LABELS}")
            category = row["category"].strip() or "unrelated"
            samples.append(Sample(id=f"emgsd/{path.name}:{i}", question=f'Sentence: "{row["text"].strip()}"',
                                  target=LABELS.index(label), options=LABELS, category=category,
                                  meta={"label": label, "group": row["group"]}))
        if not samples:
            raise ValueError(f"EMGSD: {path} has no rows")
        return carve(samples, FRACTIONS, self.split_seed, key=lambda s: (s.meta["label"], s.category))
