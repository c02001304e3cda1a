"""The SST-2 sentiment judge (weights, training, files) and the ``sentiment`` continuation task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corrsteer.tasks import get_task, list_tasks
from corrsteer.tasks.data import dataset_dir
from corrsteer.tasks.judging import (SENTIMENT_FILE, NgramJudge, build_sentiment_judge, read_sst2, sentiment_judge,
                                     tokenize, train_ngram_judge)
from corrsteer.tasks.sentiment import FRAMES, STRONG, SUBJECTS


def sst2_folder() -> Path | None:
    try:
        return dataset_dir("sst2", "*.tsv")
    except Exception:
        return None


SST2 = sst2_folder()
needs_sst2 = pytest.mark.skipif(SST2 is None, reason="SST-2 not found (../shared/datasets/sst2 or $CORRSTEER_DATA)")

POSITIVE = ["a warm, funny and wonderful film", "the staff was friendly and the food was delicious",
            "it was a great experience and I loved every minute", "a beautiful, moving and brilliant story",
            "the best concert I have been to, full of energy and fun"]
NEGATIVE = ["a dull, boring mess", "the room was dirty and the service was terrible",
            "unfortunately it was a waste of time", "the worst meal I have ever had, bland and stupid",
            "a depressing, flat and tedious evening"]


def test_tokenize_matches_sst2_tokenisation():
    assert tokenize("It wasn't great -- it's FINE!") == ["it", "was", "n't", "great", "it", "'s", "fine", "!"]
    assert tokenize("it was n't great -- it 's fine !") == tokenize("It wasn\u2019t great, it's fine!")
    assert tokenize("-lrb- a writer\\/director -rrb- ``quoted''") == ["a", "writer/director", "quoted"]
    assert tokenize("Don't, can't, won't") == ["do", "n't", "ca", "n't", "wo", "n't"]


def test_shipped_judge_is_small_and_documented():
    judge = sentiment_judge()
    assert SENTIMENT_FILE.stat().st_size < 1_000_000
    assert judge.labels == ("negative", "positive") and judge.n_max == 2
    meta = judge.meta
    assert {"dev_accuracy", "l2", "min_df", "n_train", "train_sha256", "dev_sha256", "cv"} <= set(meta)
    assert meta["n_train"] == 6920 and meta["n_dev"] == 872 and 0.75 < meta["dev_accuracy"] < 0.9
    import corrsteer.tasks.judging as judging
    assert f"{meta['dev_accuracy']:.3f}" in judging.__doc__  # the module docstring states the shipped accuracy


@pytest.mark.parametrize("text", POSITIVE)
def test_judge_reads_obvious_positive_sentences(text):
    assert sentiment_judge().predict(text) == 1, f"{text!r}: P={sentiment_judge().probability(text):.3f}"


@pytest.mark.parametrize("text", NEGATIVE)
def test_judge_reads_obvious_negative_sentences(text):
    assert sentiment_judge().predict(text) == 0, f"{text!r}: P={sentiment_judge().probability(text):.3f}"


def test_judge_probability_is_logistic_of_logit_and_fast():
    import math
    import time
    judge = sentiment_judge()
    assert judge.probability("") == pytest.approx(1 / (1 + math.exp(-judge.bias)))
    text = " a great place to visit, but the staff was rude and the rooms were not clean"
    assert judge.probability(text) == pytest.approx(1 / (1 + math.exp(-judge.logit(text))))
    start = time.perf_counter()
    for _ in range(200):
        judge.probability(text)
    assert (time.perf_counter() - start) / 200 < 0.005  # milliseconds per continuation at most
    with pytest.raises(TypeError, match="text must be a str"):
        judge.probability(None)  # type: ignore[arg-type]


@needs_sst2
def test_shipped_weights_reproduce_stored_dev_accuracy():
    judge = sentiment_judge()
    texts, labels = read_sst2(SST2 / "dev.tsv")
    assert round(judge.accuracy(texts, labels), 4) == judge.meta["dev_accuracy"]


def test_training_is_deterministic_and_learns():
    texts = POSITIVE * 3 + NEGATIVE * 3 + ["fine and fun", "boring and bad", "a lovely day", "a terrible day"]
    labels = [1] * 15 + [0] * 15 + [1, 0, 1, 0]
    a = train_ngram_judge(texts, labels, l2=1e-3, min_df=1)
    b = train_ngram_judge(list(texts), list(labels), l2=1e-3, min_df=1)
    assert a.weights == b.weights and a.bias == b.bias and a.meta == b.meta
    assert a.meta["train_accuracy"] == 1.0 and a.weights["fun"] > 0 > a.weights["boring"]
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        train_ngram_judge(["a", "b"], [0, 2])
    with pytest.raises(ValueError, match="as many labels as texts"):
        train_ngram_judge(["a", "b"], [0])


@needs_sst2
def test_training_on_sst2_is_deterministic():
    texts, labels = read_sst2(SST2 / "train.tsv")
    a = train_ngram_judge(texts[:1500], labels[:1500], l2=1e-3)
    b = train_ngram_judge(texts[:1500], labels[:1500], l2=1e-3)
    assert a.weights == b.weights and a.bias == b.bias


@needs_sst2
@pytest.mark.slow
def test_retraining_reproduces_the_shipped_file():
    """20 s idle, about 1.5 min on 2 busy cores: the script's training gives the shipped weights exactly."""
    rebuilt = build_sentiment_judge(SST2)
    shipped = NgramJudge.load(SENTIMENT_FILE)
    assert rebuilt.bias == shipped.bias and rebuilt.weights == shipped.weights
    assert rebuilt.meta == shipped.meta


def test_save_load_round_trip(tmp_path):
    judge = train_ngram_judge(POSITIVE + NEGATIVE, [1] * 5 + [0] * 5, min_df=1, label_names=("neg", "pos"))
    judge.save(tmp_path / "j.json")
    again = NgramJudge.load(tmp_path / "j.json")
    assert again.weights == judge.weights and again.bias == judge.bias and again.labels == ("neg", "pos")
    assert again.path == tmp_path / "j.json" and again.meta == judge.meta


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "is not valid JSON"),
    ('{"format": "something-else"}', "is not a 'corrsteer-ngram-judge-1' file"),
    ("[1, 2]", "is not a 'corrsteer-ngram-judge-1' file"),
    ('{"format": "corrsteer-ngram-judge-1", "weights": {}, "bias": 0}', "non-empty 'weights'"),
    ('{"format": "corrsteer-ngram-judge-1", "weights": {"a": "x"}, "bias": 0}', "non-numeric weights"),
    ('{"format": "corrsteer-ngram-judge-1", "weights": {"a": 1}, "bias": 0, "labels": ["x"]}', "'labels' must list 2"),
])
def test_bad_judge_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "judge.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        NgramJudge.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match=message):
        get_task("sentiment", judge_path=str(path))


# ---- the task ---------------------------------------------------------------------
def test_sentiment_task_registered_and_split_by_subject():
    assert "sentiment" in list_tasks()
    task = get_task("sentiment")
    splits = {k: task.samples(k) for k in ("train", "validation", "test")}
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes["train"] >= 1000 and sizes["validation"] >= 100 and sizes["test"] >= 300, sizes
    assert sum(sizes.values()) == sum(map(len, SUBJECTS.values())) * len(FRAMES)  # nothing dropped
    subjects = {k: {s.meta["group"] for s in v} for k, v in splits.items()}
    assert not (subjects["train"] & subjects["test"] or subjects["train"] & subjects["validation"]
                or subjects["validation"] & subjects["test"])
    assert task.categories() == sorted(SUBJECTS)
    assert task.samples("test") == get_task("sentiment").samples("test")
    assert task.samples("test") != get_task("sentiment", split_seed=1).samples("test")


def test_sentiment_openers_are_neutral_prompts():
    task = get_task("sentiment")
    judge = sentiment_judge()
    for s in task.samples("train") + task.samples("test"):
        assert task.prompt(s) == s.question and not s.question.endswith(" ")
        from corrsteer.tasks.judging import ngrams
        strong = [g for g in ngrams(tokenize(s.question)) if abs(judge.weights.get(g, 0.0)) >= STRONG]
        assert not strong, f"{s.question!r} holds opinion n-grams {strong}"
    assert 16 <= task.max_new_tokens <= 32 and "\n" in task.stop_strings and ". " in task.stop_strings


def test_sentiment_reward_is_the_judge_on_the_completion_only():
    task = get_task("sentiment")
    s = task.samples("test", 1)[0]
    assert task.reward(s, " a wonderful, warm and fun place") == 1
    assert task.reward(s, " a boring, dull mess") == 0
    assert task.reward(s, "") == int(sentiment_judge().bias >= 0)  # no evidence: the bias decides
    value = task.extract(s, " a wonderful place")
    assert isinstance(value, float) and 0.5 < value < 1
    json.dumps(value)  # recorded in generations.jsonl


def test_sentiment_task_accepts_another_judge_file(tmp_path):
    judge = train_ngram_judge(["sunny", "rain"], [1, 0], min_df=1, l2=1e-3)
    judge.save(tmp_path / "weather.json")
    task = get_task("sentiment", judge_path=str(tmp_path / "weather.json"))
    s = task.samples("test", 1)[0]
    assert task.reward(s, " sunny") == 1 and task.reward(s, " rain") == 0
    with pytest.raises(ValueError, match="strong must be a positive weight"):
        get_task("sentiment", strong=0)
