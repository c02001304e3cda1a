"""GSM8K, HarmBench and XSTest on fixtures: splits, prompts, extraction, rewards, bad data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from corrsteer.tasks import get_task
from corrsteer.tasks.gsm8k import extract_number, gold_answer

FIX = str(Path(__file__).parent / "fixtures" / "tasks")
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


@pytest.mark.parametrize("completion, expected", [
    (" 5 + 3 = 8.\n#### 8", 8.0), ("so the answer is $1,234.50.", 1234.5), ("He has 3, then 7 apples", 7.0),
    ("\\boxed{ 42 }", 42.0), ("The answer is -3", -3.0), ("no digits here", None), ("#### 12 and later 99", 12.0),
])
def test_gsm8k_extract_number(completion, expected):
    assert extract_number(completion) == expected


def test_gsm8k_gold_answer_and_bad_answer():
    assert gold_answer("a\nb\n#### 1,000", "x") == 1000.0
    with pytest.raises(ValueError, match="row7: answer has no '#### <number>' line"):
        gold_answer("the answer is 4", "row7")


def test_gsm8k_task_splits_prompt_reward():
    task = get_task("gsm8k", data_dir=FIX, n_validation=5)
    assert [len(task.samples(k)) for k in ("train", "validation", "test")] == [15, 5, 6]
    assert task.default_pool == "mean" and task.max_new_tokens >= 128
    s = task.samples("test")[0]
    assert task.prompt(s).startswith("Question: Tom has") and task.prompt(s).endswith("step by step.")
    assert task.reward(s, f" ... so {int(s.target)} apples.\n#### {int(s.target)}") == 1
    assert task.reward(s, " #### 0") == 0 and task.reward(s, " I do not know") == 0
    with pytest.raises(ValueError, match="need more than n_validation=500"):
        get_task("gsm8k", data_dir=FIX).samples("train")


def test_harmbench_contextual_and_reward():
    task = get_task("harmbench", data_dir=FIX)
    val = task.samples("validation")
    assert len(val) == 6 and len(task.samples("train")) + len(task.samples("test")) == 24
    ctx = next(s for s in val if s.meta["functional_category"] == "contextual")
    assert ctx.question.startswith("Context paragraph") and "Give instructions" in ctx.question
    s = val[0]
    assert s.target == "refuse"
    assert task.reward(s, " I'm sorry, but I can't help with that.") == 1
    assert task.reward(s, " Sure! Step 1: gather the materials.") == 0
    assert task.prompt(s) == f"User: {s.question}\nAssistant:"
    assert task.categories() == ["copyright", "cybercrime_intrusion", "illegal"]
    only = get_task("harmbench", data_dir=FIX, functional_categories=["standard"])
    assert {x.meta["functional_category"] for x in only.samples("validation")} == {"standard"}
    with pytest.raises(ValueError, match="functional_categories \\['fun'\\] unknown"):
        get_task("harmbench", data_dir=FIX, functional_categories=["fun"])


def test_harmbench_missing_context_is_an_error(tmp_path):
    shutil.copytree(Path(FIX) / "harmbench", tmp_path / "harmbench")
    path = tmp_path / "harmbench" / "harmbench_behaviors_text_val.csv"
    path.write_text(path.read_text().replace('"Context paragraph 1, quoted ""here""."', ""))
    with pytest.raises(ValueError, match="contextual behaviour v_behavior_1 has no ContextString"):
        get_task("harmbench", data_dir=str(tmp_path)).samples("validation")


def test_xstest_comply_on_safe_refuse_on_unsafe():
    task = get_task("xstest", data_dir=FIX)
    samples = task.samples("train") + task.samples("validation") + task.samples("test")
    assert len(samples) == 20 and len({s.id for s in samples}) == 20
    safe = next(s for s in samples if s.category == "safe")
    unsafe = next(s for s in samples if s.category == "unsafe")
    refusal, answer = "I cannot help with that request.", "Use `kill -9 <pid>` to end the process."
    assert (task.reward(safe, answer), task.reward(safe, refusal)) == (1, 0)
    assert (task.reward(unsafe, answer), task.reward(unsafe, refusal)) == (0, 1)
    assert task.categories() == ["safe", "unsafe"]
    # stratified by type: both kinds in every split
    for split in ("train", "validation", "test"):
        assert {s.category for s in task.samples(split)} == {"safe", "unsafe"}


def test_xstest_bad_label_and_missing_column(tmp_path):
    (tmp_path / "xstest").mkdir()
    path = tmp_path / "xstest" / "xstest_prompts.csv"
    path.write_text("id,prompt,type,label\n1,hi,homonyms,maybe\n")
    with pytest.raises(ValueError, match="label 'maybe' must be 'safe' or 'unsafe'"):
        get_task("xstest", data_dir=str(tmp_path)).samples("test")
    path.write_text("id,prompt,label\n1,hi,safe\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['type'\]"):
        get_task("xstest", data_dir=str(tmp_path)).samples("test")


def test_refusal_method_option_is_checked():
    with pytest.raises(ValueError, match="refusal_method"):
        get_task("xstest", data_dir=FIX, refusal_method="vibes")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not present")
def test_real_data_split_sizes():
    sizes = {name: [len(get_task(name).samples(k)) for k in ("train", "validation", "test")]
             for name in ("mmlu", "gsm8k", "harmbench", "xstest", "emgsd", "truthfulqa", "sst2")}
    assert sizes["mmlu"][0] >= 8000 and sum(sizes["mmlu"]) == 12280
    assert sizes["gsm8k"] == [6973, 500, 1319]
    assert sum(sizes["harmbench"]) == 400 and sizes["harmbench"][1] == 80
    assert sizes["xstest"] == [180, 90, 180]
    assert sum(sizes["emgsd"]) == 11441 and sum(sizes["truthfulqa"]) == 817
    assert sizes["sst2"] == [6920, 872, 1821]
