"""Every candidate in one batched pass: the same completions and scores as one pass per candidate.

Each batch of validation samples carries a row per (sample, condition), steered per row;
each row keeps the padding it has in the sequential pass (the batches are the same
samples), so under greedy decoding the completions must be the same, row for row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from test_collection import ParityTask

from corrsteer.method import evaluation
from corrsteer.method.evaluation import generate_conditions, generate_records, make_validator
from corrsteer.method.selection import select


def _vec(seed: int, norm: float) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(32, generator=g)
    return (v / v.norm() * norm).numpy()


SETS = [None, [(1, _vec(1, 6.0), "resid_post")],
        [(0, _vec(2, 4.0), "resid_post"), (2, _vec(3, 4.0), "resid_post")], [(2, _vec(4, 10.0), "resid_pre")],
        {0: _vec(5, 8.0)}]


@pytest.mark.parametrize("n, batch_size", [(9, 4), (6, 6)])  # 9 = 4 + 4 + 1: a one-row batch too
def test_batched_pass_equals_one_pass_per_set(tiny_model: Any, tiny_tokenizer: Any, n: int, batch_size: int) -> None:
    task = ParityTask()
    samples = task.samples("validation", n)
    seq = [generate_records(tiny_model, tiny_tokenizer, task, samples, s, batch_size=batch_size, progress=False)
           for s in SETS]
    bat = generate_conditions(tiny_model, tiny_tokenizer, task, samples, SETS, batch_size=batch_size,
                              progress=False)
    for k, (a, b) in enumerate(zip(seq, bat)):
        assert a == b, f"set {k}: batched records differ from the sequential ones"
    completions = {tuple(r["completion"] for r in recs) for recs in seq}
    assert len(completions) >= 4, "the sets barely change the completions; the test could not see a mix-up"


def test_validator_many_equals_sequential_and_makes_fewer_generate_calls(tiny_llama: Any, tiny_tokenizer: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    task = ParityTask()
    samples = task.samples("validation", 10)
    calls: list[int] = []
    real = evaluation.generate

    def counting(model: Any, tok: Any, prompts: list[str], *args: Any, **kw: Any) -> Any:
        calls.append(len(prompts))
        return real(model, tok, prompts, *args, **kw)

    monkeypatch.setattr(evaluation, "generate", counting)
    scores = {}
    for batched in (False, True):
        calls.clear()
        v = make_validator(tiny_llama, tiny_tokenizer, task, samples, batch_size=4, progress=False, batched=batched)
        scores[batched] = (v.many(SETS), list(calls))
    assert scores[True][0] == scores[False][0]
    assert scores[False][1] == [4, 4, 2] * len(SETS)           # one pass per set
    assert scores[True][1] == [4 * len(SETS), 4 * len(SETS), 2 * len(SETS)]  # one pass, every set per batch
    single = make_validator(tiny_llama, tiny_tokenizer, task, samples, batch_size=4, progress=False)
    assert single(SETS[3]) == scores[False][0][3]


def test_pruned_selection_is_the_same_batched_or_not(tiny_llama: Any, tiny_tokenizer: Any, make_tiny_sae: Any) -> None:
    from corrsteer.method.collection import collect

    task = ParityTask()
    saes = {l: make_tiny_sae(32, 48, "relu", seed=20 + l, layer=l) for l in (0, 1, 2)}
    col = collect(tiny_llama, tiny_tokenizer, task, saes, task.samples("train", 24), batch_size=6, progress=False)
    val = task.samples("validation", 8)
    sels = [select(col, saes, "pruned", scale=8.0, validate=make_validator(
        tiny_llama, tiny_tokenizer, task, val, batch_size=3, progress=False, batched=b)) for b in (False, True)]
    a, b = (s.to_dict() for s in sels)
    assert a == b
    assert len(a["candidates"]) >= 4 and a["baseline_score"] is not None
    assert len({c["score"] for c in a["candidates"]} | {a["baseline_score"]}) >= 2, "every score equal: too weak"


def test_a_validator_that_returns_the_wrong_number_of_scores_is_refused() -> None:
    from test_selection import ACCS, eye_saes

    def validate(interventions: Any) -> float:
        return 0.5

    validate.many = lambda sets: [0.5] * (len(sets) - 1)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="scores for"):
        select(ACCS, eye_saes([0, 1, 2]), "global", validate=validate)
