"""``arithmetic``: a generated, seeded task that needs no data files (demo and tests).

Each sample is one small integer problem (``7 + 12 =``, ``15 - 6 =``, ``max(4, 17) =``)
under a two-line few-shot prefix of the same operation; the reward is 1 iff the first
integer in the completion equals the result. The problem pool is every operand pair in
``range(low, high)`` for each operation (``sub`` only with ``a >= b``); it is shuffled
with ``split_seed`` and cut 60/15/25 into ``train`` / ``validation`` / ``test`` (or into
``n_train`` / ``n_validation`` / ``n_test``), so the splits are disjoint and identical in
every run. Categories are the operations; ``meta["carry"]`` marks carries and borrows.

Defaults (operands 0-19; add, sub, max: 1,010 problems -> 606 / 151 / 253) were chosen
by measurement so that the embedded Gemma 3 270M base model (Q4_K_M GGUF, greedy, base
prompt) scores near the middle: 0.58 on 100 test samples (seed 0; add 0.50, sub 0.62,
max 0.62). Two-digit addition scored 0.12 and subtraction 0.07, too low for useful
correlations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from corrsteer.tasks.base import Sample, Task, stable_rng

OPERATIONS = {  # name -> (question format, result, few-shot examples)
    "add": ("{a} + {b} =", lambda a, b: a + b, ((3, 4), (12, 25))),
    "sub": ("{a} - {b} =", lambda a, b: a - b, ((9, 5), (47, 13))),
    "mul": ("{a} * {b} =", lambda a, b: a * b, ((3, 4), (6, 7))),
    "max": ("max({a}, {b}) =", lambda a, b: max(a, b), ((3, 8), (51, 17))),
}
_INT = re.compile(r"-?\d+")
# Defaults measured on the embedded Gemma 3 270M base model (see the module docstring).
DEFAULT_LOW, DEFAULT_HIGH, DEFAULT_OPERATIONS = 0, 20, ("add", "sub", "max")


def _carry(op: str, a: int, b: int) -> bool:
    """Whether ``a op b`` needs a carry (add), a borrow (sub) or a two-digit product (mul)."""
    if op == "mul":
        return a * b >= 10
    if op == "max":
        return False
    da, db = str(a)[::-1], str(b)[::-1]
    carry = 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        carry = int(x + y + carry >= 10) if op == "add" else int(x - y - carry < 0)
        if carry:
            return True
    return False


class ArithmeticTask(Task):
    """Generated integer arithmetic (few-shot, answer after "="); no data files needed.

    Options:
        low, high: operands are drawn from ``range(low, high)``.
        operations: subset of ``add``, ``sub`` (only ``a >= b``, so results are >= 0),
            ``mul``, ``max``.
        n_train, n_validation, n_test: split sizes (None = split the whole problem pool
            60/15/25).
    """

    name = "arithmetic"
    max_new_tokens = 4
    stop_strings = ("\n",)
    default_pool = "max"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 low: int = DEFAULT_LOW, high: int = DEFAULT_HIGH, operations: Sequence[str] = DEFAULT_OPERATIONS,
                 n_train: int | None = None, n_validation: int | None = None, n_test: int | None = None) -> None:
        super().__init__(None, split_seed, chat)
        for key, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be a non-negative int, got {value!r}")
        if high - low < 2:
            raise ValueError(f"need high - low >= 2 (operands in range(low, high)), got low={low}, high={high}")
        if isinstance(operations, str):
            operations = [operations]
        bad = sorted(set(operations) - set(OPERATIONS))
        if bad or not operations:
            raise ValueError(f"operations must be a non-empty subset of {sorted(OPERATIONS)}, got {list(operations)}")
        self.low, self.high, self.operations = low, high, tuple(dict.fromkeys(operations))
        self.problems = [(op, a, b) for op in self.operations for a in range(low, high) for b in range(low, high)
                         if op != "sub" or a >= b]
        given = {"train": n_train, "validation": n_validation, "test": n_test}
        if all(v is None for v in given.values()):
            n = len(self.problems)
            given = {"train": int(0.6 * n), "validation": int(0.15 * n)}
            given["test"] = n - given["train"] - given["validation"]
        for key, value in given.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"n_{key} must be a positive int (or all three None), got {value!r}")
        if sum(given.values()) > len(self.problems):
            raise ValueError(f"{sum(given.values())} problems asked but only {len(self.problems)} distinct ones "
                             f"exist for operands in range({low}, {high}) and {list(self.operations)}; "
                             "lower n_train/n_validation/n_test or widen low/high")
        self.sizes = given

    def source(self) -> str:
        return f"generated (operands in range({self.low}, {self.high}), operations={list(self.operations)})"

    def load_splits(self) -> dict[str, list[Sample]]:
        rng = stable_rng("arithmetic", self.split_seed, self.low, self.high, *self.operations)
        order = rng.permutation(len(self.problems))
        out: dict[str, list[Sample]] = {}
        start = 0
        for split, size in self.sizes.items():
            out[split] = [self._sample(*self.problems[i]) for i in order[start:start + size]]
            start += size
        return out

    def _sample(self, op: str, a: int, b: int) -> Sample:
        fmt, fn, _ = OPERATIONS[op]
        return Sample(id=f"arithmetic:{op}:{a}:{b}", question=fmt.format(a=a, b=b), target=fn(a, b),
                      category=op, meta={"carry": _carry(op, a, b), "a": a, "b": b})

    def user_text(self, sample: Sample) -> str:
        return f"What is {sample.question.rstrip(' =')}? Reply with the number only."

    def base_prompt(self, sample: Sample) -> str:
        fmt, fn, shots = OPERATIONS[str(sample.category)]
        prefix = "".join(f"{fmt.format(a=a, b=b)} {fn(a, b)}\n" for a, b in shots)
        return f"{prefix}{sample.question}"

    def extract(self, sample: Sample, completion: str) -> int | None:
        match = _INT.search(completion.replace(",", ""))
        return int(match.group()) if match else None
