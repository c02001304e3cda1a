"""The generated arithmetic task: determinism, disjoint splits, prompts and rewards."""

from __future__ import annotations

import pytest

from corrsteer.tasks import get_task
from corrsteer.tasks.synthetic import _carry


def test_arithmetic_splits_disjoint_and_cover_pool():
    task = get_task("arithmetic")
    ids = [{s.id for s in task.samples(k)} for k in ("train", "validation", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == len(task.problems) and len(ids[0]) == int(0.6 * len(task.problems))
    assert task.categories() == sorted(task.operations)
    assert task.samples("test") == get_task("arithmetic").samples("test")
    assert task.samples("test") != get_task("arithmetic", split_seed=1).samples("test")
    sized = get_task("arithmetic", low=10, high=100, operations=["add"], n_train=30, n_validation=5, n_test=5)
    assert [len(sized.samples(k)) for k in ("train", "validation", "test")] == [30, 5, 5]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "max"])
def test_arithmetic_targets_and_rewards(op):
    task = get_task("arithmetic", low=0, high=30, operations=[op])
    for s in task.samples("train", n=40):
        a, b = s.meta["a"], s.meta["b"]
        assert 0 <= a < 30 and 0 <= b < 30 and s.category == op
        expected = {"add": a + b, "sub": a - b, "mul": a * b, "max": max(a, b)}[op]
        assert s.target == expected and (op != "sub" or s.target >= 0)
        assert task.reward(s, f" {s.target}") == 1
        assert task.reward(s, f" {s.target + 1}") == 0
    s = task.samples("test", n=1)[0]
    assert task.reward(s, "") == 0 and task.extract(s, " nothing") is None
    assert task.reward(s, f" {s.target}\n12 + 3 = 15") == 1  # only the first number counts


def test_arithmetic_prompt_is_short_few_shot():
    task = get_task("arithmetic", operations=["sub"])
    s = task.samples("test")[0]
    prompt = task.prompt(s)
    assert prompt.splitlines()[:2] == ["9 - 5 = 4", "47 - 13 = 34"]
    assert prompt.endswith(f"{s.meta['a']} - {s.meta['b']} =") and len(prompt) < 60
    assert task.max_new_tokens <= 6 and task.stop_strings == ("\n",)
    mx = get_task("arithmetic", operations=["max"])
    assert mx.prompt(mx.samples("test")[0]).startswith("max(3, 8) = 8\nmax(51, 17) = 51\nmax(")


def test_arithmetic_carry():
    assert _carry("add", 15, 17) and not _carry("add", 12, 13)
    assert _carry("sub", 31, 17) and not _carry("sub", 38, 17)


def test_arithmetic_bad_options():
    with pytest.raises(ValueError, match="need high - low >= 2"):
        get_task("arithmetic", low=5, high=6)
    with pytest.raises(ValueError, match="low must be a non-negative int"):
        get_task("arithmetic", low=-1)
    with pytest.raises(ValueError, match="operations must be a non-empty subset"):
        get_task("arithmetic", operations=["div"])
    with pytest.raises(ValueError, match="only 100 distinct ones exist"):
        get_task("arithmetic", low=0, high=10, operations=["add"], n_train=200, n_validation=1, n_test=1)
    with pytest.raises(ValueError, match="n_validation must be a positive int"):
        get_task("arithmetic", n_train=5, n_test=5)
