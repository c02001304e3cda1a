"""ContinuationTask: user tasks from openers + a judge via register_task, splits, rewards, the pipeline."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from corrsteer.tasks import get_task, list_tasks, register_task
from corrsteer.tasks.continuation import ContinuationTask, judge_value

COLOURS = re.compile(r"\b(red|green|blue|yellow|purple|orange|pink|brown|black|white|grey|gray)\b", re.I)
OPENERS = [f"{who} walked into the {room} and" for who in ("Anna", "My uncle", "The guest", "Our teacher")
           for room in ("kitchen", "garden", "hall", "office", "shop", "museum", "station")]


def test_register_task_snippet_from_the_docs():
    """The README / module-docstring snippet, as written."""
    register_task("colour", lambda data_dir=None, **opts: ContinuationTask(
        openers=OPENERS, judge=lambda text: bool(COLOURS.search(text)), task_name="colour", **opts),
        overwrite=True)
    assert "colour" in list_tasks()
    task = get_task("colour")
    assert task.name == "colour"
    splits = [task.samples(k) for k in ("train", "validation", "test")]
    assert sum(map(len, splits)) == len(OPENERS) and all(splits)
    s = splits[2][0]
    assert task.prompt(s) == s.question
    assert task.reward(s, " saw a red kite") == 1 and task.reward(s, " sat down") == 0
    assert task.extract(s, " saw a Blue door") == 1.0
    assert get_task("colour", split_seed=3).samples("test") != task.samples("test")


def test_groups_never_cross_splits():
    pool = [(f"{who} opened the {thing} and", who) for who in "ABCDEFGHIJ" for thing in ("box", "door", "book")]
    task = ContinuationTask(openers=pool, judge=lambda t: 0.7)
    groups = {k: {s.meta["group"] for s in task.samples(k)} for k in ("train", "validation", "test")}
    assert sum(map(len, groups.values())) == 10
    assert not (groups["train"] & groups["test"] or groups["validation"] & groups["test"])
    assert all(task.reward(s, "anything") == 1 for s in task.samples("test"))


def test_judge_values_and_threshold():
    task = ContinuationTask(openers=[f"opener {i}" for i in range(10)], judge=len, threshold=3)
    s = task.samples("train", 1)[0]
    assert task.reward(s, "ab") == 0 and task.reward(s, "abc") == 1
    none_task = ContinuationTask(openers=["a", "b", "c"], judge=lambda t: None)
    assert none_task.reward(none_task.samples("test")[0], "x") == 0
    assert judge_value(True) == 1.0 and judge_value(None) is None
    bad = ContinuationTask(openers=["a", "b", "c"], judge=lambda t: "yes")
    with pytest.raises(TypeError, match="a judge must return a bool, a number or None"):
        bad.reward(bad.samples("test")[0], "x")


def test_given_splits_and_bad_options():
    task = ContinuationTask(openers={"train": ["a b", "c d"], "validation": ["e"], "test": ["f", "g"]},
                            judge=bool)
    assert [len(task.samples(k)) for k in ("train", "validation", "test")] == [2, 1, 2]
    with pytest.raises(ValueError, match="lacks splits"):
        ContinuationTask(openers={"train": ["a"]}, judge=bool).samples("train")
    with pytest.raises(ValueError, match="needs openers"):
        ContinuationTask(judge=bool).samples("train")
    with pytest.raises(ValueError, match="needs judge"):
        t = ContinuationTask(openers=["a", "b", "c"])
        t.reward(t.samples("test")[0], "x")
    with pytest.raises(TypeError, match="judge must be a function"):
        ContinuationTask(openers=["a"], judge="positive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 3 groups"):
        ContinuationTask(openers=["a", "b"], judge=bool).samples("train")
    with pytest.raises(ValueError, match="non-empty strings"):
        ContinuationTask(openers=["a", " ", "c"], judge=bool).samples("train")
    with pytest.raises(TypeError, match="an opener must be a str"):
        ContinuationTask(openers=[("a", 1)], judge=bool).samples("train")
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        ContinuationTask(openers=["a"], judge=bool, max_new_tokens=0)
    assert ContinuationTask(openers=["a"], judge=bool, max_new_tokens=8).max_new_tokens == 8


@pytest.mark.parametrize("name", ["sentiment", "food"])
def test_builtin_tasks_run_through_the_pipeline(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                                make_tiny_sae: Any, name: str) -> None:
    """collect -> select -> evaluate on the tiny model: the pipeline reads the tasks through get_task,
    and their extracted values (a float, a word) go into generations.jsonl."""
    from corrsteer.config import RunConfig
    from corrsteer.pipeline import run

    saes = {l: make_tiny_sae(32, 48, "relu", seed=20 + l, layer=l) for l in (0, 1, 2)}
    cfg = RunConfig(task=name, model="tiny", sae="tiny", n_train=12, n_val=4, n_test=6, batch_size=6,
                    checkpoint_every=12, progress=False, n_boot=50, out=str(tmp_path), mode="all",
                    max_new_tokens=6)
    results = run(cfg, model=tiny_llama, tokenizer=tiny_tokenizer, task=get_task(name), saes=saes)
    assert results["baseline"]["n"] == 6 and results["task"] == name
    rows = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["reward"] in (0, 1) for r in rows)
