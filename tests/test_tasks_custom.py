"""The custom classification task from CSV and JSONL, and its bad-data errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corrsteer.tasks import get_task

FIX = Path(__file__).parent / "fixtures" / "tasks"


def test_custom_csv_one_call():
    task = get_task("custom", path=str(FIX / "custom_reviews.csv"), template="Review: {text}",
                    label_column="sentiment", header="Is this review positive or negative?")
    assert task.samples("train") and task.samples("validation") and task.samples("test")
    s = task.samples("test")[0]
    assert s.options == ("neg", "pos")  # sorted distinct labels
    prompt = task.prompt(s)
    assert prompt.startswith("Is this review positive or negative?\n\nReview: review ")
    assert prompt.endswith("A. neg\nB. pos\nAnswer:")
    gold = s.options[s.target]
    assert task.reward(s, " " + "AB"[s.target]) == 1 and task.reward(s, f" {gold}") == 1
    assert task.reward(s, " " + "AB"[1 - s.target]) == 0
    assert task.categories() == ["neg", "pos"]
    ids = [{x.id for x in task.samples(k)} for k in ("train", "validation", "test")]
    assert sum(map(len, ids)) == 20 and not (ids[0] & ids[2])


def test_custom_jsonl_split_column_labels_mapping_and_options_slot():
    task = get_task("custom", path=str(FIX / "custom_reviews.jsonl"), template="{review}\nChoices:\n{options}\nAnswer:",
                    label_column="label", labels={"0": "negative", "1": "positive"}, split_column="split",
                    task_name="reviews")
    assert task.name == "reviews"
    assert [len(task.samples(k)) for k in ("train", "validation", "test")] == [14, 2, 4]
    s = task.samples("test")[0]
    assert s.options == ("negative", "positive")
    assert task.prompt(s).count("A. negative") == 1 and task.prompt(s).count("Answer:") == 1
    assert task.reward(s, " " + s.options[s.target]) == 1


def test_custom_category_column():
    task = get_task("custom", path=str(FIX / "custom_reviews.csv"), template="{text}", label_column="sentiment",
                    category_column="topic")
    assert task.categories() == ["film", "food"]


def test_custom_errors(tmp_path):
    csv_path = str(FIX / "custom_reviews.csv")
    with pytest.raises(ValueError, match="needs path="):
        get_task("custom")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['body'\]"):
        get_task("custom", path=csv_path, template="{body}", label_column="sentiment").samples("train")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['stars'\]"):
        get_task("custom", path=csv_path, template="{text}", label_column="stars").samples("train")
    with pytest.raises(ValueError, match="label 'pos' is not one of the labels \\['neg', 'neutral'\\]"):
        get_task("custom", path=csv_path, template="{text}", label_column="sentiment",
                 labels=["neg", "neutral"]).samples("train")
    with pytest.raises(ValueError, match="does not exist"):
        get_task("custom", path=str(tmp_path / "nope.csv")).samples("train")
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(ValueError, match="no rows"):
        get_task("custom", path=str(empty)).samples("train")
    one = tmp_path / "one.jsonl"
    one.write_text("\n".join(json.dumps({"text": f"t{i}", "label": "a"}) for i in range(5)))
    with pytest.raises(ValueError, match="at least 2 labels"):
        get_task("custom", path=str(one)).samples("train")
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("text,label\na,x\nb,y\nc,x\nd,y\n")
    with pytest.raises(ValueError, match="split 'validation' is empty"):
        get_task("custom", path=str(tiny)).samples("train")
    bad_split = tmp_path / "bad_split.csv"
    bad_split.write_text("text,label,split\na,x,train\nb,y,holdout\n")
    with pytest.raises(ValueError, match="split 'holdout' must be one of"):
        get_task("custom", path=str(bad_split), split_column="split").samples("train")
    other = tmp_path / "data.parquet"
    other.write_text("x")
    with pytest.raises(ValueError, match="unsupported file type '.parquet'"):
        get_task("custom", path=str(other)).samples("train")
