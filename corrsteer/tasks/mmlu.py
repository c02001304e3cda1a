"""MMLU (Hendrycks et al. 2021): four-option multiple choice over 57 subjects.

Data: ``mmlu/test/<subject>_test.csv`` with header ``question,choice0..3,answer``
(``answer`` = gold index 0-3); the subject is the file name.

Splits: the copy has no train split, so every ``test`` row of every subject is pooled
and carved with ``split_seed``, stratified by subject, 70/10/20 into ``train`` /
``validation`` / ``test`` (12,280 rows -> about 8,590 / 1,220 / 2,470). Results on
``test`` are therefore on a held-out fifth of MMLU's test set, not all of it. The
options keep MMLU's order (already fixed per question).
"""

from __future__ import annotations

import logging

from corrsteer.tasks.base import Sample, carve
from corrsteer.tasks.choice import MultipleChoiceTask
from corrsteer.tasks.data import hf_rows, read_csv

logger = logging.getLogger(__name__)

COLUMNS = ("question", "choice0", "choice1", "choice2", "choice3", "answer")
FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}


class MMLUTask(MultipleChoiceTask):
    """MMLU multiple choice (A-D), test rows carved 70/10/20 by subject (split_seed).

    Options:
        subjects: keep only these subjects (file-name stems, e.g. ``"anatomy"``); None = all.
        source: ``"files"`` (default) or ``"hf"`` (``cais/mmlu`` via the ``datasets`` package).
    """

    name = "mmlu"
    max_new_tokens = 6

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 subjects: list[str] | None = None, source: str = "files", verify: bool = True) -> None:
        super().__init__(data_dir, split_seed, chat)
        if source not in ("files", "hf"):
            raise ValueError(f"source must be 'files' or 'hf', got {source!r}")
        self.subjects = None if subjects is None else list(subjects)
        self.source_kind = source
        self.verify = verify

    def header(self, sample: Sample) -> str:
        return f"The following is a multiple choice question about {sample.category.replace('_', ' ')}."

    def _rows(self) -> list[tuple[str, str, dict]]:
        if self.source_kind == "hf":
            rows = hf_rows("cais/mmlu", "test", config="all")
            return [(r["subject"], f"hf:cais/mmlu/test:{i}",
                     {"question": r["question"], **{f"choice{j}": c for j, c in enumerate(r["choices"])},
                      "answer": r["answer"]}) for i, r in enumerate(rows)]
        folder = self.locate("mmlu", "test/*_test.csv")
        paths = sorted((folder / "test").glob("*_test.csv"))
        available = [p.name[: -len("_test.csv")] for p in paths]
        missing = sorted(set(self.subjects or ()) - set(available))
        if missing:
            raise ValueError(f"MMLU subjects not found: {missing}; available in {folder}: {available}")
        out = []
        for path, subject in zip(paths, available):
            if self.subjects is not None and subject not in self.subjects:
                continue
            for i, row in enumerate(read_csv(path, COLUMNS, check=self.verify)):
                out.append((subject, f"mmlu/test/{path.name}:{i}", row))
        return out

    def load_splits(self) -> dict[str, list[Sample]]:
        samples = []
        for subject, sid, row in self._rows():
            try:
                answer = int(row["answer"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{sid}: answer {row['answer']!r} is not an integer 0-3") from exc
            options = tuple(str(row[f"choice{j}"]) for j in range(4))
            samples.append(self.check_sample(Sample(id=sid, question=str(row["question"]).strip(),
                                                    target=answer, options=options, category=subject)))
        if not samples:
            raise ValueError("MMLU: no rows found; check the data folder")
        logger.info("MMLU: %d rows from %d subjects", len(samples), len({s.category for s in samples}))
        return carve(samples, FRACTIONS, self.split_seed, key=lambda s: s.category)
