"""TruthfulQA (Lin et al. 2022) as multiple choice: the best answer against false ones.

Data: ``truthfulqa/TruthfulQA.csv`` with ``Type,Category,Question,Best Answer,Correct
Answers,Incorrect Answers,Source``; answer lists are separated by ``"; "``. Each sample
offers the ``Best Answer`` and up to ``n_incorrect`` (default 3) of the ``Incorrect
Answers``, chosen and ordered by a generator seeded with the sample id and ``split_seed``,
so the prompt is the same in every run. Categories are TruthfulQA's 38 categories.

Splits: TruthfulQA has none; its 817 questions are carved with ``split_seed``,
50/10/40 into ``train`` / ``validation`` / ``test`` (408 / 82 / 327).
"""

from __future__ import annotations

from corrsteer.tasks.base import Sample, carve
from corrsteer.tasks.choice import MultipleChoiceTask, seeded_order
from corrsteer.tasks.data import read_csv

COLUMNS = ("Type", "Category", "Question", "Best Answer", "Incorrect Answers")
FRACTIONS = {"train": 0.5, "validation": 0.1, "test": 0.4}


class TruthfulQATask(MultipleChoiceTask):
    """TruthfulQA MC: best answer vs up to 3 incorrect ones in seeded order, carved 50/10/40.

    Options:
        n_incorrect: how many incorrect answers to offer at most (1-25).
    """

    name = "truthfulqa"
    max_new_tokens = 8

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 n_incorrect: int = 3, verify: bool = True) -> None:
        super().__init__(data_dir, split_seed, chat)
        if isinstance(n_incorrect, bool) or not isinstance(n_incorrect, int) or not 1 <= n_incorrect <= 25:
            raise ValueError(f"n_incorrect must be an int in 1..25, got {n_incorrect!r}")
        self.n_incorrect = n_incorrect
        self.verify = verify

    def load_splits(self) -> dict[str, list[Sample]]:
        path = self.locate("truthfulqa", "TruthfulQA.csv") / "TruthfulQA.csv"
        samples = []
        for i, row in enumerate(read_csv(path, COLUMNS, check=self.verify)):
            sid = f"truthfulqa/{path.name}:{i}"
            best = row["Best Answer"].strip()
            wrong = [a.strip() for a in row["Incorrect Answers"].split(";") if a.strip() and a.strip() != best]
            if not best or not wrong:
                raise ValueError(f"{path}:{i}: needs a Best Answer and at least one Incorrect Answer")
            pick = seeded_order(len(wrong), "truthfulqa-pick", sid, self.split_seed)[: self.n_incorrect]
            pool = [best] + [wrong[j] for j in pick]
            order = seeded_order(len(pool), "truthfulqa-order", sid, self.split_seed)
            options = tuple(pool[j] for j in order)
            samples.append(self.check_sample(Sample(id=sid, question=row["Question"].strip(), target=order.index(0),
                                                    options=options, category=row["Category"].strip() or None,
                                                    meta={"type": row["Type"]})))
        if not samples:
            raise ValueError(f"TruthfulQA: {path} has no rows")
        return carve(samples, FRACTIONS, self.split_seed)
