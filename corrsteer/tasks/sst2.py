"""SST-2 (Socher et al. 2013): binary sentiment of movie-review sentences.

Data: ``sst2/{train,dev,test}.tsv``, no header, ``label<TAB>sentence`` with 1 = positive.
Splits: the official ones: ``train`` (6,920), ``validation`` = ``dev`` (872), ``test`` (1,821).
The options are shown as ``A. negative`` / ``B. positive``; the answer may be the letter or
the word. Categories are the gold labels (``negative``, ``positive``).
"""

from __future__ import annotations

import csv

from corrsteer.tasks.base import Sample
from corrsteer.tasks.choice import MultipleChoiceTask
from corrsteer.storage.datasets import verify

LABELS = ("negative", "positive")
FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}


class SST2Task(MultipleChoiceTask):
    """SST-2 sentiment (A. negative / B. positive) with the official train/dev/test splits."""

    name = "sst2"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 verify: bool = True) -> None:
        super().__init__(data_dir, split_seed, chat)
        self.verify = verify

    def header(self, sample: Sample) -> str:
        return "What is the sentiment of this movie review?"

    def _read(self, split: str) -> list[Sample]:
        path = self.locate("sst2", "*.tsv") / FILES[split]
        if not path.is_file():
            raise ValueError(f"SST-2: {path} is missing; the folder needs {sorted(FILES.values())}")
        if self.verify:
            verify(path)
        out = []
        with open(path, newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)):
                if len(row) != 2 or row[0] not in ("0", "1"):
                    raise ValueError(f"{path}:{i + 1}: expected 'label<TAB>sentence' with label 0 or 1, got {row[:2]!r}")
                label = int(row[0])
                out.append(Sample(id=f"sst2/{path.name}:{i}", question=f"Review: {row[1].strip()}",
                                  target=label, options=LABELS, category=LABELS[label]))
        return out

    def load_splits(self) -> dict[str, list[Sample]]:
        return {split: self._read(split) for split in FILES}
