"""Tests for corrsteer.method.statistics: statistics checked against scipy, records I/O, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from corrsteer.method import statistics as ev
from corrsteer.report import records, tables


def _paired(n: int, p_pos: float, p_neg: float, p_base: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired rewards with P(0->1) = p_pos, P(1->0) = p_neg: true delta = p_pos - p_neg."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    base = (rng.random(n) < p_base).astype(int)
    # flip a 0 with prob p_pos / (1 - p_base), a 1 with prob p_neg / p_base
    flip = np.where(base == 0, u < p_pos / (1 - p_base), u < p_neg / p_base)
    return base, np.where(flip, 1 - base, base)


# ------------------------------------------------------------------ McNemar

@pytest.mark.parametrize("b", range(0, 26))
def test_mcnemar_matches_scipy_binomtest_small_grid(b):
    for c in range(0, 26):
        want = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
        got = ev.mcnemar_exact(b, c)
        assert got == pytest.approx(want, rel=1e-12, abs=0), f"b={b} c={c}"


@pytest.mark.parametrize("b,c", [(480, 520), (499, 501), (400, 600), (990, 1300), (1500, 1700),
                                 (3000, 3300), (20000, 20600), (50, 5000), (7, 1200)])
def test_mcnemar_matches_scipy_binomtest_large_counts(b, c):
    want = stats.binomtest(b, b + c, 0.5).pvalue
    got = ev.mcnemar_exact(b, c)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-300), f"b={b} c={c}: {got} vs {want}"
    assert ev.mcnemar_exact(c, b) == got  # two-sided: symmetric


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2500), st.integers(0, 2500))
def test_mcnemar_matches_scipy_binomtest_random_counts(b, c):
    want = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    got = ev.mcnemar_exact(b, c)
    if want < 1e-280:  # scipy underflows to 0 first; we only require "astronomically small"
        assert got < 1e-270, (b, c, got, want)
    else:
        assert got == pytest.approx(want, rel=1e-9), (b, c, got, want)


@pytest.mark.parametrize("n", [20, 333, 999, 1000])
def test_mcnemar_log_space_path_agrees_with_exact_integers(n):
    for m in (0, 1, n // 5, n // 2 - 3, n // 2):
        exact = ev._binom_half_cdf_exact(m, n)
        logsp = math.exp(ev._binom_half_log_cdf(m, n))
        assert logsp == pytest.approx(exact, rel=1e-10), f"n={n} m={m}"


def test_mcnemar_rejects_bad_counts():
    with pytest.raises(ValueError, match="pos"):
        ev.mcnemar_exact(-1, 3)
    with pytest.raises(TypeError, match="neg"):
        ev.mcnemar_exact(1, 2.5)


# ------------------------------------------------------------------ SER and compare() on hand cases

def test_compare_hand_case_counts_ser_and_scores():
    r = ev.compare([0, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1], n_boot=500)
    assert (r["pos"], r["neg"]) == (2, 1)
    assert r["ser"] == pytest.approx(1 / 3)
    assert r["baseline"] == {"score": 0.5, "n": 6}
    assert r["steered"]["score"] == pytest.approx(4 / 6)
    assert r["delta"] == pytest.approx(1 / 6)
    assert r["mcnemar_p"] == pytest.approx(stats.binomtest(1, 3, 0.5).pvalue)
    assert r["per_category"] == {}


@pytest.mark.parametrize("base,steer,pos,neg,ser", [
    ([0, 1, 1], [0, 1, 1], 0, 0, None),    # nothing changed: SER undefined, not 0
    ([0, 0, 1], [1, 1, 1], 2, 0, 0.0),     # only fixes
    ([1, 1, 0], [0, 0, 0], 0, 2, 1.0),     # only breaks
    ([0, 1, 0, 1], [1, 0, 1, 0], 2, 2, 0.5),
])
def test_side_effect_ratio_hand_cases(base, steer, pos, neg, ser):
    r = ev.compare(base, steer, n_boot=100)
    assert (r["pos"], r["neg"], r["ser"]) == (pos, neg, ser)
    assert ev.side_effect_ratio(pos, neg) == ser


def test_compare_unchanged_rewards_give_p_one_and_zero_interval():
    r = ev.compare([0, 1, 1, 0], [0, 1, 1, 0], n_boot=200)
    assert r["mcnemar_p"] == 1.0 and r["ci95"] == [0.0, 0.0] and r["delta"] == 0.0


def test_compare_accepts_bools_and_float_arrays_and_is_json_ready():
    r = ev.compare(np.array([True, False, True]), np.array([1.0, 1.0, 0.0]), categories=["a", "b", "a"],
                   n_boot=100)
    assert (r["pos"], r["neg"]) == (1, 1)
    back = json.loads(json.dumps(r, allow_nan=False))
    assert back["per_category"]["a"]["neg"] == 1


# ------------------------------------------------------------------ paired bootstrap

def test_bootstrap_ci_contains_true_difference_on_constructed_case():
    base, steer = _paired(3000, p_pos=0.15, p_neg=0.07, p_base=0.5, seed=11)
    lo, hi = ev.paired_bootstrap_ci(base, steer, n_boot=4000, seed=0)
    assert lo < 0.08 < hi, (lo, hi)
    assert lo > 0  # a real +8 pp effect with n=3000 is detected


def test_bootstrap_ci_coverage_is_near_95_percent():
    hits, trials = 0, 300
    for t in range(trials):
        base, steer = _paired(200, p_pos=0.2, p_neg=0.1, p_base=0.5, seed=1000 + t)
        lo, hi = ev.paired_bootstrap_ci(base, steer, n_boot=800, seed=t)
        hits += lo <= 0.1 <= hi
    assert 0.89 <= hits / trials <= 0.99, f"coverage {hits}/{trials}"


def test_bootstrap_ci_matches_normal_approximation_for_large_n():
    base, steer = _paired(5000, p_pos=0.1, p_neg=0.05, p_base=0.6, seed=3)
    d = steer - base
    half = 1.959964 * d.std() / math.sqrt(d.size)
    lo, hi = ev.paired_bootstrap_ci(base, steer, n_boot=5000, seed=1)
    assert lo == pytest.approx(d.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(d.mean() + half, abs=0.1 * half)


def test_bootstrap_resamples_pairs_not_conditions_independently():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2, 1000)
    steer = base.copy()
    steer[np.flatnonzero(base == 0)[:10]] = 1  # 10 fixes, nothing else changes
    lo, hi = ev.paired_bootstrap_ci(base, steer, n_boot=3000, seed=0)
    # unpaired resampling would give a width of ~2*1.96*sqrt(2*0.25/1000) = 0.088
    assert hi - lo < 0.02 and lo >= 0.0, (lo, hi)


def test_bootstrap_is_seeded_and_matches_the_documented_method():
    base, steer = _paired(300, 0.2, 0.1, 0.5, seed=9)
    a = ev.paired_bootstrap_ci(base, steer, n_boot=2000, seed=7)
    assert a == ev.paired_bootstrap_ci(base, steer, n_boot=2000, seed=7)
    assert a != ev.paired_bootstrap_ci(base, steer, n_boot=2000, seed=8)
    # the documented method, written out naively: one draw of (n_boot, n) indices
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 300, size=(2000, 300), dtype=np.int32)
    means = (steer - base)[idx].mean(axis=1)
    assert a == pytest.approx(list(np.quantile(means, [0.025, 0.975])), abs=1e-12)


def test_bootstrap_chunking_keeps_the_interval(monkeypatch):
    base, steer = _paired(400, 0.2, 0.1, 0.5, seed=2)
    whole = ev.paired_bootstrap_ci(base, steer, n_boot=3000, seed=0)
    monkeypatch.setattr(ev, "_BOOT_CHUNK_ELEMS", 400 * 7)  # 7 resamples per chunk
    chunked = ev.paired_bootstrap_ci(base, steer, n_boot=3000, seed=0)
    assert chunked == pytest.approx(whole, abs=0.01)


def test_score_ci_and_wilson_interval():
    r = np.r_[np.ones(30, int), np.zeros(70, int)]
    lo, hi = ev.score_ci(r, n_boot=3000, seed=0)
    assert lo < 0.3 < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 100), rel=0.15)
    assert ev.score_ci(r, n_boot=500, seed=3) == ev.score_ci(r, n_boot=500, seed=3)
    for k, n in [(0, 1), (0, 10), (3, 10), (10, 10), (55, 200), (1, 1000)]:
        want = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert ev.wilson_interval(k, n) == pytest.approx((want.low, want.high), abs=1e-9), (k, n)


@pytest.mark.parametrize("k,n,exc", [(1, 0, ValueError), (5, 4, ValueError), (-1, 4, ValueError),
                                     (1.5, 4, TypeError)])
def test_wilson_interval_rejects_bad_counts(k, n, exc):
    with pytest.raises(exc):
        ev.wilson_interval(k, n)


# ------------------------------------------------------------------ per category

def test_per_category_splits_like_separate_calls():
    base, steer = _paired(240, 0.2, 0.1, 0.5, seed=4)
    cats = np.array(["x", "y", "z", None], dtype=object)[np.arange(240) % 4].tolist()
    r = ev.compare(base, steer, categories=cats, n_boot=300, seed=1)
    assert list(r["per_category"]) == ["x", "y", "z"]  # None samples are in no row
    assert r["baseline"]["n"] == 240
    for i, cat in enumerate(["x", "y", "z"]):
        sel = np.arange(240) % 4 == i
        row = r["per_category"][cat]
        alone = ev.compare(base[sel], steer[sel], n_boot=300)
        for key in ("baseline", "steered", "delta", "mcnemar_p", "ser", "pos", "neg"):
            assert row[key] == alone[key], (cat, key)
        assert "per_category" not in row


def test_category_interval_does_not_depend_on_other_categories():
    base, steer = _paired(200, 0.2, 0.1, 0.5, seed=6)
    two = ev.compare(base, steer, categories=["a", "b"] * 100, n_boot=500, seed=2)
    only_b = ev.compare(base[1::2], steer[1::2], categories=["b"] * 100, n_boot=500, seed=2)
    assert two["per_category"]["b"]["ci95"] == only_b["per_category"]["b"]["ci95"]


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("base,steer,exc,match", [
    ([0, 1], [0, 1, 1], ValueError, "same test samples"),
    ([], [], ValueError, "baseline is empty"),
    ([0, 2], [0, 1], ValueError, "baseline must be binary"),
    ([0, 1], [0, 0.5], ValueError, "steered must be binary"),
    ([0, 1], [-1, 1], ValueError, "steered must be binary"),
    ([0, float("nan")], [0, 1], ValueError, "baseline contains NaN"),
    (["1", "0"], [1, 0], TypeError, "baseline must hold numbers"),
    ([0, None], [1, 0], TypeError, "baseline must hold numbers"),
    ([[0, 1]], [[0, 1]], ValueError, "baseline must be 1-D"),
    ("01", [0, 1], TypeError, "baseline must be a sequence"),
])
def test_compare_rejects_bad_rewards(base, steer, exc, match):
    with pytest.raises(exc, match=match):
        ev.compare(base, steer, n_boot=10)


def test_compare_rejects_bad_categories_and_options():
    with pytest.raises(ValueError, match="categories has 1 entries"):
        ev.compare([0, 1], [1, 1], categories=["a"])
    with pytest.raises(TypeError, match=r"categories\[1\]"):
        ev.compare([0, 1], [1, 1], categories=["a", 3])
    with pytest.raises(ValueError, match="n_boot"):
        ev.compare([0, 1], [1, 1], n_boot=0)
    with pytest.raises(ValueError, match="seed"):
        ev.compare([0, 1], [1, 1], seed=-1)


# ------------------------------------------------------------------ table, verdict, formatting

def test_compare_table_contains_the_numbers():
    r = ev.compare([0] * 50 + [1] * 50, [1] * 20 + [0] * 30 + [1] * 45 + [0] * 5, n_boot=500)
    md = tables.compare_table({"all": r, "empty": {}})
    lines = md.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| condition")
    row = lines[2]
    assert "| all | 50.0 | 65.0 | +15.0 |" in row
    assert f"[{100 * r['ci95'][0]:+.1f}, {100 * r['ci95'][1]:+.1f}]" in row
    assert tables.format_p(r["mcnemar_p"]) in row and "| 0.20 |" in row and "20 / 5" in row
    assert lines[3].count("–") >= 7  # missing values render as a dash, no crash
    with pytest.raises(TypeError, match="results"):
        tables.compare_table([r])


def test_verdict_sentences_follow_the_numbers():
    up = ev.compare([0] * 80 + [1] * 20, [1] * 30 + [0] * 50 + [1] * 20, n_boot=500)
    assert tables.verdict(up).startswith("improved by +30.0 pp")
    down = ev.compare([1] * 100, [0] * 30 + [1] * 70, n_boot=500)
    assert tables.verdict(down).startswith("worsened by -30.0 pp")
    flat = ev.compare([0, 1] * 50, [1, 0] * 3 + [0, 1] * 47, n_boot=500)
    assert tables.verdict(flat).startswith("no significant change") and "CI includes 0" in tables.verdict(flat)
    assert tables.verdict(ev.compare([0, 1], [0, 1], n_boot=10)).startswith("no change")
    weak = {"delta": 0.05, "ci95": [0.001, 0.1], "mcnemar_p": 0.07, "pos": 9, "neg": 2}
    assert tables.verdict(weak).startswith("weak evidence") and "excludes 0" in tables.verdict(weak)


@pytest.mark.parametrize("p,text", [(1.0, "1"), (0.41, "0.41"), (0.041, "0.041"), (0.0041, "0.0041"),
                                    (3.2e-5, "3.2e-05")])
def test_format_p(p, text):
    assert tables.format_p(p) == text


# ------------------------------------------------------------------ generation records

def _records():
    return [{"id": f"s{i}", "category": "a" if i % 2 else None, "prompt": "Q: 2+2?",
             "completion": "4 ✓", "extracted": np.int64(4), "reward": np.int64(i % 2),
             "condition": cond, "meta_x": np.array([1, 2])}
            for cond in ("baseline", "steered") for i in range(3)]


def test_generations_jsonl_roundtrip(tmp_path):
    path = records.write_generations_jsonl(tmp_path / "sub" / "gen.jsonl", _records())
    back = records.read_generations_jsonl(path)
    assert len(back) == 6 and back[0]["extracted"] == 4 and back[0]["meta_x"] == [1, 2]
    assert back[0]["completion"] == "4 ✓"
    assert [p.name for p in path.parent.iterdir()] == ["gen.jsonl"]  # no temp file left


def test_write_generations_is_atomic_on_failure(tmp_path):
    path = tmp_path / "gen.jsonl"
    records.write_generations_jsonl(path, _records())
    before = path.read_text()
    bad = _records() + [{**_records()[0], "extracted": object()}]
    with pytest.raises(TypeError, match=r"records\[6\]"):
        records.write_generations_jsonl(path, bad)
    assert path.read_text() == before and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("change,exc,match", [
    ({"reward": 2}, ValueError, "reward 2"),
    ({"reward": float("nan")}, ValueError, "reward"),
    ({"condition": "other"}, ValueError, "condition"),
    ({"extracted": float("nan")}, ValueError, "cannot be written"),
])
def test_write_generations_rejects_bad_records(tmp_path, change, exc, match):
    with pytest.raises(exc, match=match):
        records.write_generations_jsonl(tmp_path / "g.jsonl", [{**_records()[0], **change}])
    rec = dict(_records()[0])
    del rec["prompt"]
    with pytest.raises(ValueError, match="lacks"):
        records.write_generations_jsonl(tmp_path / "g.jsonl", [rec])


def test_read_generations_names_file_and_line_of_bad_data(tmp_path):
    path = tmp_path / "g.jsonl"
    good = json.dumps({k: 1 for k in ("id", "category", "prompt", "completion", "extracted", "reward")})
    path.write_text(good + "\n\n" + '{"id": 1, "rew\n')
    with pytest.raises(ValueError, match=r"g.jsonl:3: not valid JSON.*not a generations file"):
        records.read_generations_jsonl(path)
    path.write_text(good + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"g.jsonl:2: expected a JSON object, got list"):
        records.read_generations_jsonl(path)
    path.write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match=r"g.jsonl:1: missing key\(s\) \[.category"):
        records.read_generations_jsonl(path)


def test_pair_records_pairs_by_id_and_rejects_mismatch():
    recs = _records()
    ids, cats, b, s = records.pair_records(recs[3:][::-1] + recs[:3])  # order free
    assert ids == ["s0", "s1", "s2"] and cats == [None, "a", None] and b == s == [0, 1, 0]
    with pytest.raises(ValueError, match="different samples"):
        records.pair_records(recs[:-1])
    with pytest.raises(ValueError, match="twice"):
        records.pair_records(recs + recs[:1])
    with pytest.raises(ValueError, match="condition"):
        records.pair_records([{**recs[0], "condition": None}])


def test_importing_evaluation_needs_no_torch_scipy_or_matplotlib():
    code = ("import sys, corrsteer.method.statistics; "
            "bad = [m for m in ('torch', 'scipy', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_paired_difference_p_matches_the_exact_sign_flip_test() -> None:
    import itertools

    a = np.array([1, 1, 0, 1, 1, 1, 0, 1], float)
    b = np.array([0, 0.5, 0, 0, 1 / 3, 1, 0, 0])  # e.g. a mean over three draws
    d = a - b
    flips = np.array(list(itertools.product([-1, 1], repeat=len(d))))
    exact = np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-12)
    got = ev.paired_difference(a, b, n_boot=40000, seed=1)
    assert got["delta"] == pytest.approx(d.mean())
    assert got["p"] == pytest.approx(exact, abs=0.01)
    lo, hi = got["ci95"]
    assert lo <= d.mean() <= hi
    with pytest.raises(ValueError, match="one length"):
        ev.paired_difference(a, b[:3])


def test_compare_draws_reports_every_draw_and_their_mean() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 120)
    draws = [np.where(rng.random(120) < p, 1 - base, base) for p in (0.0, 0.1, 0.3)]
    out = ev.compare_draws(base, draws, n_boot=2000, seed=0)
    assert out["n_draws"] == 3 and len(out["draws"]) == 3
    deltas = [ev.compare(base, d, n_boot=2000)["delta"] for d in draws]
    assert [d["delta"] for d in out["draws"]] == deltas
    assert out["delta"] == pytest.approx(np.mean(deltas))
    assert out["spread"] == [min(deltas), max(deltas)]
    assert out["steered"]["score"] == pytest.approx(np.mean([d.mean() for d in draws]))
    same = ev.compare_draws(base, [base, base], n_boot=500)
    assert same["delta"] == 0 and same["p"] == 1.0
    with pytest.raises(ValueError, match="draws is empty"):
        ev.compare_draws(base, [])
