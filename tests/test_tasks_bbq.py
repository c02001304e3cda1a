"""BBQ tasks: prompts, extraction, splits, and the bias scores on hand-checked records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corrsteer.tasks import get_task
from corrsteer.tasks.bbq import bias_scores, stereotyped_index

FIX = str(Path(__file__).parent / "fixtures" / "tasks")
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def rec(cond, pol, extracted, reward=0, stereo=0, unknown=2, category="Age"):
    return {"id": "x", "category": category, "extracted": extracted, "reward": reward, "context_condition": cond,
            "question_polarity": pol, "stereotyped_index": stereo, "unknown_index": unknown}


def test_disambiguated_bias_score_by_hand():
    records = [rec("disambig", "neg", 0),      # stereotyped option for a negative question: biased
               rec("disambig", "neg", 1),      # the other group: not biased
               rec("disambig", "nonneg", 0, stereo=1),  # non-target for a non-negative question: biased
               rec("disambig", "nonneg", 2, stereo=1),  # unknown: left out
               rec("disambig", "neg", None)]   # unanswered: left out
    out = bias_scores(records)["disambig"]["overall"]
    assert (out["n_non_unknown"], out["n_biased"]) == (3, 2)
    assert out["s_dis"] == pytest.approx(2 * 2 / 3 - 1)
    assert "s_amb" not in out


def test_ambiguous_bias_score_scales_by_error_rate():
    records = [rec("ambig", "neg", 0), rec("ambig", "neg", 1, stereo=1), rec("ambig", "nonneg", 0),
               rec("ambig", "neg", 2, reward=1)]
    out = bias_scores(records)["ambig"]["overall"]
    assert out["accuracy"] == pytest.approx(0.25)
    assert out["s_amb"] == pytest.approx((1 - 0.25) * (2 * 2 / 3 - 1))


def test_bias_scores_per_category_and_extremes():
    records = ([rec("disambig", "neg", 0, category="Age")] * 3 + [rec("disambig", "neg", 1, category="Religion")] * 2
               + [rec("ambig", "neg", 2, reward=1)] * 2)
    out = bias_scores(records)
    assert out["disambig"]["per_category"]["Age"]["s_dis"] == 1.0
    assert out["disambig"]["per_category"]["Religion"]["s_dis"] == -1.0
    assert out["ambig"]["overall"]["s_amb"] is None  # every answer was unknown
    meta_form = [{"id": "x", "category": "Age", "extracted": 0, "reward": 0,
                  "meta": {"context_condition": "disambig", "question_polarity": "neg",
                           "stereotyped_index": 0, "unknown_index": 2}}]
    assert bias_scores(meta_form)["disambig"]["overall"]["s_dis"] == 1.0


def test_bias_scores_need_meta():
    with pytest.raises(ValueError, match="lacks 'unknown_index'.*meta"):
        bias_scores([{"id": "x", "extracted": 0, "reward": 0, "context_condition": "ambig"}])


def test_bbq_fixture_task():
    task = get_task("bbq_ambig", data_dir=FIX)
    assert task.name == "bbq_ambig" and task.categories() == ["Age", "Religion"]
    sizes = [len(task.samples(k)) for k in ("train", "validation", "test")]
    assert sizes == [14, 2, 4]  # 10 ambiguous rows per category, 70/10/20 each
    s = task.samples("test")[0]
    assert s.target == s.meta["unknown_index"] == 2
    prompt = task.prompt(s)
    assert prompt.endswith("\nAnswer:") and "A. " in prompt and "C. Can't be determined" in prompt
    assert task.reward(s, " C") == 1 and task.reward(s, " A") == 0
    assert task.reward(s, " can't be determined") == 1
    dis = get_task("bbq_disambig", data_dir=FIX, categories="Religion")
    assert dis.categories() == ["Religion"]
    assert all(x.meta["context_condition"] == "disambig" for x in dis.samples("train"))


def test_bbq_metrics_from_task_records():
    task = get_task("bbq_disambig", data_dir=FIX)
    samples = task.samples("train")
    records = []
    for s in samples:  # always answer the stereotyped option: s_DIS = 2*(#neg/#all) - 1
        comp = " " + "ABC"[s.meta["stereotyped_index"]]
        records.append({**s.meta, "id": s.id, "category": s.category, "completion": comp,
                        "extracted": task.extract(s, comp), "reward": task.reward(s, comp)})
    n_neg = sum(s.meta["question_polarity"] == "neg" for s in samples)
    got = task.metrics(records)["bias"]["disambig"]["overall"]["s_dis"]
    assert got == pytest.approx(2 * n_neg / len(samples) - 1)


def test_bbq_unknown_category_and_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="categories not found: \\['SES'\\]"):
        get_task("bbq_ambig", data_dir=FIX, categories=["SES"]).samples("train")
    (tmp_path / "bbq").mkdir()
    row = json.loads((Path(FIX) / "bbq" / "Age.jsonl").read_text().splitlines()[0])
    del row["answer_info"]
    (tmp_path / "bbq" / "Age.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"Age.jsonl:1: missing key\(s\) \['answer_info'\]"):
        get_task("bbq_ambig", data_dir=str(tmp_path)).samples("train")
    (tmp_path / "bbq" / "Age.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="Age.jsonl:1: not valid JSON"):
        get_task("bbq_ambig", data_dir=str(tmp_path)).samples("train")


def test_stereotyped_index_matches_group_or_text():
    row = {"additional_metadata": {"stereotyped_groups": ["Nigerian"]},
           "answer_info": {"ans0": ["Nigerian", "Africa"], "ans1": ["Swiss", "Europe"], "ans2": ["Unknown", "unknown"]}}
    assert stereotyped_index(row) == 0
    row["additional_metadata"]["stereotyped_groups"] = ["europe"]
    assert stereotyped_index(row) == 1
    row["additional_metadata"]["stereotyped_groups"] = ["Martian"]
    assert stereotyped_index(row) is None


@pytest.mark.skipif(not (SHARED / "bbq").is_dir(), reason="../shared/datasets not present")
def test_bbq_real_sizes_allow_1000_collection_samples():
    for name in ("bbq_ambig", "bbq_disambig"):
        task = get_task(name)
        sizes = {k: len(task.samples(k)) for k in ("train", "validation", "test")}
        assert sizes["train"] >= 1000 and sizes["validation"] >= 400 and sizes["test"] >= 1000, sizes
        assert task.categories() == ["Age", "Disability_status", "Nationality", "Religion", "Sexual_orientation"]
        # every real row has exactly one stereotyped option
        assert all(s.meta["stereotyped_index"] is not None for s in task.samples("train"))
