"""Multiple-choice answer extraction and the MCQ/classification tasks on fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from corrsteer.tasks import get_task
from corrsteer.tasks.choice import extract_choice, format_options, seeded_order

FIX = str(Path(__file__).parent / "fixtures" / "tasks")
OPTS = ["The grandfather", "The grandson", "Can't be determined"]


@pytest.mark.parametrize("completion, expected", [
    (" B", 1), ("B.", 1), ("(B)", 1), ("B) The grandson", 1), ("Answer: B", 1), (" **C**", 2),
    ("The answer is (C)", 2), ("The correct answer is: C.", 2), ("the answer is c", 2), ("Option B", 1),
    (" A", 0), ("A.", 0), ("A: The grandfather", 0), ("a) something", 0),
    ("The grandson was confused", 1), ("can\u2019t be determined.", 2), ("I think it's the grandfather.", 0),
    ("", None), ("   ", None), ("xyz", None), ("D", None), ("A grandson", None),
    ("I think the answer is a man", None), ("The grandfather or the grandson", 0), ("grandson and grandfather", None),
])
def test_extract_choice(completion, expected):
    assert extract_choice(completion, OPTS) == expected


def test_extract_prefers_longest_option_text():
    opts = ["gay", "not gay", "unknown"]
    assert extract_choice("not gay", opts) == 1
    assert extract_choice("gay", opts) == 0


def test_format_options_and_seeded_order():
    assert format_options(["x", "y"]) == "A. x\nB. y"
    assert seeded_order(5, "id", 0) == seeded_order(5, "id", 0)
    assert sorted(seeded_order(5, "id", 0)) == list(range(5))
    assert any(seeded_order(5, f"id{i}", 0) != list(range(5)) for i in range(5))


def test_mmlu_prompt_extract_reward():
    task = get_task("mmlu", data_dir=FIX)
    s = task.samples("test", n=1)[0]
    base = task.prompt(s)
    assert base.startswith("The following is a multiple choice question about ")
    assert base.endswith("\nAnswer:") and "\nA. " in base and "\nD. " in base
    letter = "ABCD"[s.target]
    assert task.reward(s, f" {letter}") == 1
    assert task.reward(s, f" {'ABCD'[(s.target + 1) % 4]}") == 0
    assert task.reward(s, " no idea") == 0
    assert task.extract(s, " no idea") is None
    assert task.categories() == ["anatomy", "astronomy"]
    assert task.max_new_tokens <= 8 and task.stop_strings == ("\n",)


def test_mmlu_splits_disjoint_cover_pool():
    task = get_task("mmlu", data_dir=FIX)
    ids = [{s.id for s in task.samples(k)} for k in ("train", "validation", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 24
    assert get_task("mmlu", data_dir=FIX, split_seed=1).samples("test") != task.samples("test")


def test_mmlu_subject_filter_and_errors(tmp_path):
    assert get_task("mmlu", data_dir=FIX, subjects=["anatomy"]).categories() == ["anatomy"]
    with pytest.raises(ValueError, match="subjects not found.*'physics'.*available"):
        get_task("mmlu", data_dir=FIX, subjects=["physics"]).samples("test")
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "test" / "x_test.csv").write_text("question,choice0,choice1,answer\nq,a,b,0\n")
    with pytest.raises(ValueError, match=r"x_test.csv: missing column\(s\) \['choice2', 'choice3'\]"):
        get_task("mmlu", data_dir=str(tmp_path)).samples("test")


def test_emgsd_classification():
    task = get_task("emgsd", data_dir=FIX)
    s = next(x for x in task.samples("train") if x.meta["label"] == "neutral")
    assert s.options == ("stereotype", "neutral", "unrelated") and s.target == 1
    assert task.reward(s, " B") == 1 and task.reward(s, " neutral") == 1 and task.reward(s, " stereotype") == 0
    assert task.categories() == ["nationality", "profession", "unrelated"]
    assert "stereotype" in task.prompt(s) and task.prompt(s).endswith("Answer:")


def test_emgsd_label_outside_options(tmp_path):
    (tmp_path / "emgsd").mkdir()
    (tmp_path / "emgsd" / "emgsd_sample.csv").write_text("text,label,category,group,source\nx,biased,race,g,s\n")
    with pytest.raises(ValueError, match="label 'biased' is not one of"):
        get_task("emgsd", data_dir=str(tmp_path)).samples("train")


def test_sst2_official_splits_and_reward():
    task = get_task("sst2", data_dir=FIX)
    assert [len(task.samples(k)) for k in ("train", "validation", "test")] == [8, 4, 4]
    s = next(x for x in task.samples("test") if x.target == 1)
    assert task.reward(s, " positive") == 1 and task.reward(s, " B") == 1 and task.reward(s, " A") == 0
    assert task.categories() == ["negative", "positive"]


def test_sst2_malformed_row(tmp_path):
    (tmp_path / "sst2").mkdir()
    for name in ("train", "dev", "test"):
        (tmp_path / "sst2" / f"{name}.tsv").write_text("1\tgood film .\n")
    (tmp_path / "sst2" / "dev.tsv").write_text("positive\tgood film .\n")
    with pytest.raises(ValueError, match=r"dev.tsv:1: expected 'label<TAB>sentence'"):
        get_task("sst2", data_dir=str(tmp_path)).samples("train")


def test_truthfulqa_seeded_options():
    task = get_task("truthfulqa", data_dir=FIX)
    samples = task.samples("train") + task.samples("validation") + task.samples("test")
    assert len(samples) == 12
    for s in samples:
        assert len(s.options) == 4 and s.options[s.target].startswith("Nothing happens")
    # option order is a property of the sample, not of the draw
    again = {s.id: s.options for s in get_task("truthfulqa", data_dir=FIX).samples("test", seed=7)}
    assert all(again[s.id] == s.options for s in task.samples("test"))
    assert len({s.target for s in samples}) > 1  # the best answer is not always first
    s = samples[0]
    assert task.reward(s, " " + "ABCD"[s.target]) == 1
    assert task.reward(s, s.options[s.target]) == 1
