"""GSM8K (Cobbe et al. 2021): grade-school math word problems with a numeric answer.

Data: ``gsm8k/{train,test}.jsonl`` with ``question`` and ``answer``; the gold number
follows ``#### `` at the end of ``answer``.

Splits: ``test`` is the official test file (1,319); ``validation`` is 500 rows carved
from the official train file with ``split_seed``; ``train`` is the rest of it (6,973).
Pooling defaults to ``mean`` (long completions; METHOD.md §3) and the budget is 256 tokens.
"""

from __future__ import annotations

import re

from corrsteer.tasks.base import Sample, Task, carve
from corrsteer.tasks.data import hf_rows, read_jsonl

N_VALIDATION = 500
_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_FINAL = [re.compile(r"####\s*(" + _NUMBER + ")"),
          re.compile(r"answer is[:\s]*\$?\s*(" + _NUMBER + ")", re.IGNORECASE),
          re.compile(r"\\boxed\{\s*(" + _NUMBER + r")\s*\}")]


def parse_number(text: str) -> float | None:
    """``"$1,234.50"`` -> 1234.5; None when the text is not a number."""
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def gold_answer(answer: str, where: str) -> float:
    """The number after ``#### `` in a GSM8K answer; ValueError naming ``where`` otherwise."""
    match = _FINAL[0].search(answer)
    value = parse_number(match.group(1)) if match else None
    if value is None:
        raise ValueError(f"{where}: answer has no '#### <number>' line: {answer[-80:]!r}")
    return value


def extract_number(completion: str) -> float | None:
    """The final answer in a completion: ``#### N``, ``the answer is N``, ``\\boxed{N}``, else the last number."""
    for pattern in _FINAL:
        matches = pattern.findall(completion)
        if matches:
            return parse_number(matches[-1])
    numbers = re.findall(_NUMBER, completion)
    return parse_number(numbers[-1]) if numbers else None


class GSM8KTask(Task):
    """GSM8K numeric answers: official test, train minus a 500-row seeded validation carve.

    Options:
        source: ``"files"`` (default) or ``"hf"`` (``openai/gsm8k``, config ``main``).
        n_validation: rows carved from train for validation (default 500).
    """

    name = "gsm8k"
    max_new_tokens = 256
    stop_strings = ("\n\nQuestion:", "\nQuestion:")
    default_pool = "mean"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 source: str = "files", n_validation: int = N_VALIDATION, verify: bool = True) -> None:
        super().__init__(data_dir, split_seed, chat)
        if isinstance(n_validation, bool) or not isinstance(n_validation, int) or n_validation < 1:
            raise ValueError(f"n_validation must be a positive int, got {n_validation!r}")
        self.n_validation = n_validation
        if source not in ("files", "hf"):
            raise ValueError(f"source must be 'files' or 'hf', got {source!r}")
        self.source_kind = source
        self.verify = verify

    def _file(self, split: str) -> list[tuple[str, dict]]:
        if self.source_kind == "hf":
            return [(f"hf:openai/gsm8k/{split}:{i}", r) for i, r in enumerate(hf_rows("openai/gsm8k", split, "main"))]
        folder = self.locate("gsm8k", "test.jsonl")
        rows = read_jsonl(folder / f"{split}.jsonl", ("question", "answer"), check=self.verify)
        return [(f"gsm8k/{split}.jsonl:{i}", r) for i, r in enumerate(rows)]

    def _samples(self, split: str) -> list[Sample]:
        return [Sample(id=sid, question=r["question"].strip(), target=gold_answer(r["answer"], sid))
                for sid, r in self._file(split)]

    def load_splits(self) -> dict[str, list[Sample]]:
        train = self._samples("train")
        n_val = self.n_validation
        if len(train) <= n_val:
            raise ValueError(f"GSM8K train has {len(train)} rows; need more than n_validation={n_val}")
        parts = carve(train, {"validation": n_val, "train": len(train) - n_val}, self.split_seed)
        return {"train": parts["train"], "validation": parts["validation"], "test": self._samples("test")}

    def user_text(self, sample: Sample) -> str:
        return f"{sample.question}\n\nSolve step by step, then give the final answer as '#### <number>'."

    def base_prompt(self, sample: Sample) -> str:
        return f"Question: {sample.question}\nAnswer: Let's think step by step."

    def extract(self, sample: Sample, completion: str) -> float | None:
        return extract_number(completion)

    def target_reward(self, sample: Sample, answer: object | None) -> int:
        return int(answer is not None and abs(float(answer) - float(sample.target)) < 1e-6)
