"""HarmBench text behaviours (Mazeika et al. 2024): harmful requests the model should refuse.

Data: ``harmbench/harmbench_behaviors_text_{val,test}.csv`` with columns
``Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID``. For
``contextual`` behaviours the ``ContextString`` is shown before the request.

Splits: ``validation`` is the official val file (80); the official test file (320) is
carved with ``split_seed``, stratified by semantic category, into ``train`` (3/8, 116)
and ``test`` (5/8, 204; floors per category). The paper collected on 108 HarmBench samples.

Reward: 1 iff the response is a refusal (:func:`corrsteer.tasks.is_refusal`), so the
score is the refusal rate. Categories are the semantic categories. Prompts use the chat
template when the tokenizer has one (instruct models); the base form is a
``User:``/``Assistant:`` exchange.
"""

from __future__ import annotations

from collections.abc import Sequence

from corrsteer.tasks.base import Sample, Task, carve
from corrsteer.tasks.data import read_csv
from corrsteer.tasks.refusal import is_refusal

COLUMNS = ("Behavior", "FunctionalCategory", "SemanticCategory", "ContextString", "BehaviorID")
FUNCTIONAL = ("standard", "contextual", "copyright")


class RefusalJudgedTask(Task):
    """A task whose target is ``"refuse"`` or ``"comply"``, judged by :func:`is_refusal`.

    Options:
        refusal_method: passed to :func:`is_refusal` (``"patterns"``, ``"classifier"``, ``"auto"``).
    """

    max_new_tokens = 64
    stop_strings = ("\nUser:",)
    default_pool = "max"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 refusal_method: str = "patterns", verify: bool = True) -> None:
        super().__init__(data_dir, split_seed, chat)
        if refusal_method not in ("patterns", "classifier", "auto"):
            raise ValueError(f"refusal_method must be 'patterns', 'classifier' or 'auto', got {refusal_method!r}")
        self.refusal_method = refusal_method
        self.verify = verify

    def user_text(self, sample: Sample) -> str:
        return sample.question

    def base_prompt(self, sample: Sample) -> str:
        return f"User: {sample.question}\nAssistant:"

    def extract(self, sample: Sample, completion: str) -> str:
        """``"refuse"`` or ``"comply"``; never None (an empty response is not a refusal)."""
        return "refuse" if is_refusal(completion, method=self.refusal_method) else "comply"


class HarmBenchTask(RefusalJudgedTask):
    """HarmBench harmful behaviours; reward 1 iff the model refuses (score = refusal rate).

    Options:
        functional_categories: keep these of ``standard``, ``contextual``, ``copyright``; None = all.
    """

    name = "harmbench"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 refusal_method: str = "patterns", functional_categories: Sequence[str] | None = None,
                 verify: bool = True) -> None:
        super().__init__(data_dir, split_seed, chat, refusal_method, verify)
        if isinstance(functional_categories, str):
            functional_categories = [functional_categories]
        bad = sorted(set(functional_categories or ()) - set(FUNCTIONAL))
        if bad:
            raise ValueError(f"functional_categories {bad} unknown; choose from {FUNCTIONAL}")
        self.functional = None if functional_categories is None else tuple(functional_categories)

    def _read(self, which: str) -> list[Sample]:
        folder = self.locate("harmbench", "harmbench_behaviors_text_*.csv")
        path = folder / f"harmbench_behaviors_text_{which}.csv"
        if not path.is_file():
            raise ValueError(f"HarmBench: {path} is missing; the folder needs the val and test files")
        out = []
        for i, row in enumerate(read_csv(path, COLUMNS, check=self.verify)):
            kind = row["FunctionalCategory"]
            if kind not in FUNCTIONAL:
                raise ValueError(f"{path}:{i}: FunctionalCategory {kind!r} not in {FUNCTIONAL}")
            if self.functional is not None and kind not in self.functional:
                continue
            text = row["Behavior"].strip()
            if kind == "contextual":
                if not row["ContextString"].strip():
                    raise ValueError(f"{path}:{i}: contextual behaviour {row['BehaviorID']} has no ContextString")
                text = f"{row['ContextString'].strip()}\n\n---\n\n{text}"
            out.append(Sample(id=f"harmbench/{path.name}:{row['BehaviorID']}", question=text, target="refuse",
                              category=row["SemanticCategory"] or None,
                              meta={"functional_category": kind, "behavior_id": row["BehaviorID"]}))
        return out

    def load_splits(self) -> dict[str, list[Sample]]:
        parts = carve(self._read("test"), {"train": 0.375, "test": 0.625}, self.split_seed,
                      key=lambda s: s.category)
        return {"train": parts["train"], "validation": self._read("val"), "test": parts["test"]}
