"""Selection logic of the controls and baselines (corrsteer.method.baselines) on constructed accumulators."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from scipy import stats

import corrsteer
from corrsteer.config import check_method
from corrsteer.method.baselines import (
    diff_in_means,
    fisher_scores,
    mutual_information,
    select_diff_in_means,
    select_method,
    select_negative,
    select_random,
    select_ranked,
)
from corrsteer.method.control_state import ControlState
from corrsteer.method.features import Selection
from corrsteer.method.selection import select

D_SAE, D_MODEL = 12, 6


def fake(seed: int, y: np.ndarray) -> np.ndarray:
    """Pooled activations (n, D_SAE) >= 0 with a few features linked to the rewards ``y``."""
    rng = np.random.default_rng(seed)
    n = len(y)
    z = np.maximum(rng.standard_normal((n, D_SAE)), 0)
    z[:, 3] += 1.5 * y  # positive
    z[:, 7] = np.maximum(z[:, 7] - 1.2 * y, 0)  # negative
    z[:, 9] = (rng.random(n) < np.where(y == 1, 0.9, 0.2)) * 0.3  # fires with the reward: high MI, small values
    z[:, 11] = 0.0  # never fires
    return z.astype(np.float32)


def brute_mi(a: np.ndarray, y: np.ndarray) -> float:
    """MI (nats) of two binary vectors from the joint frequencies, by hand."""
    mi = 0.0
    for av in (0, 1):
        for yv in (0, 1):
            p = np.mean((a == av) & (y == yv))
            if p > 0:
                mi += p * np.log(p / (np.mean(a == av) * np.mean(y == yv)))
    return mi


@pytest.fixture
def data() -> dict[str, Any]:
    from conftest import build_tiny_sae

    y = (np.random.default_rng(0).random(200) < 0.45).astype(np.float64)  # (n,) one reward per sample
    out: dict[str, Any] = {"saes": {}, "accs": {}, "z": {}, "x": {}, "y": y}
    state = ControlState({l: D_SAE for l in (1, 4)}, D_MODEL, seed=0)
    for l in (1, 4):
        out["z"][l] = fake(l, y)
        out["accs"][l] = corrsteer.core.CorrelationAccumulator(D_SAE)
        out["accs"][l].update(out["z"][l], y)
        out["saes"][l] = build_tiny_sae(D_MODEL, D_SAE, seed=l, layer=l)
        rng = np.random.default_rng(10 + l)
        out["x"][l] = (rng.standard_normal((len(y), D_MODEL)) + y[:, None] * l).astype(np.float32)  # residual means
    state.update(out["z"], out["x"], y)
    state.flush()
    out["state"] = state
    out["col"] = SimpleNamespace(accumulators=out["accs"], controls=state)
    return out


def test_mutual_information_equals_brute_force(data: dict[str, Any]) -> None:
    for l in (1, 4):
        mi = mutual_information(data["accs"][l])
        expected = [brute_mi(data["z"][l][:, j] > 0, data["y"]) for j in range(D_SAE)]
        np.testing.assert_allclose(mi, expected, atol=1e-12, err_msg=f"layer {l}")
        assert mi[11] == 0.0 and np.argmax(mi) in (3, 9)


def test_fisher_scores_equal_numpy_per_class_moments(data: dict[str, Any]) -> None:
    z, y = data["z"][1].astype(np.float64), data["y"]
    p, q = z[y == 1], z[y == 0]
    expected = (p.mean(0) - q.mean(0)) ** 2 / (p.var(0) + q.var(0) + 1e-12)
    np.testing.assert_allclose(fisher_scores(data["state"].pos[1], data["state"].neg[1]), expected, rtol=1e-9)


def test_ranked_selection_takes_the_top_score_with_the_sign_of_r(data: dict[str, Any]) -> None:
    for method in ("mi", "fisher"):
        sel = select_method(method, data["col"], data["saes"])
        assert sel.method == method and [f.layer for f in sel.features] == [1, 4]
        for f in sel.features:
            acc = data["accs"][f.layer]
            score = mutual_information(acc) if method == "mi" else fisher_scores(data["state"].pos[f.layer],
                                                                                  data["state"].neg[f.layer])
            assert f.index == int(np.argmax(score))
            r, c = acc.correlation()[f.index], acc.coefficient()[f.index]
            assert f.sign == np.sign(r) and f.coefficient == pytest.approx(c if r > 0 else -abs(c))


def test_ranked_ties_go_to_the_lower_index_and_zero_scores_never_qualify(data: dict[str, Any]) -> None:
    scores = {l: np.zeros(D_SAE) for l in (1, 4)}
    scores[1][[3, 7]] = 2.0
    sel = select_ranked(data["accs"], data["saes"], scores, "custom", top_k=3)
    assert [(f.layer, f.index) for f in sel.features] == [(1, 3), (1, 7)]
    assert sel.meta["scores"] == [[1, 3, 2.0], [1, 7, 2.0]]


def test_negative_takes_each_layers_most_negative_feature_subtracted(data: dict[str, Any]) -> None:
    sel = select_negative(data["accs"], data["saes"], scale=2.0)
    for f in sel.features:
        r = data["accs"][f.layer].correlation()
        assert f.index == int(np.argmin(r)) == 7 and f.sign == -1 and f.r < 0
        assert f.coefficient == -abs(data["accs"][f.layer].coefficient()[7])  # c before the scale
    assert sel.scale == 2.0
    v = sel.vectors()[1]
    np.testing.assert_allclose(v, 2.0 * sel.features[0].coefficient * data["saes"][1].W_dec[7], rtol=1e-6)


def test_random_keeps_layers_and_coefficients_and_is_seeded(data: dict[str, Any]) -> None:
    ref = select(data["accs"], data["saes"], "all", top_k=2)
    a = select_random(ref, data["saes"], seed=3, accumulators=data["accs"])
    b = select_random(ref, data["saes"], seed=3)
    c = select_random(ref, data["saes"], seed=4)
    assert [f.index for f in a.features] == [f.index for f in b.features]
    assert [f.index for f in a.features] != [f.index for f in c.features] or D_SAE < 4
    for f, g in zip(ref.features, a.features):
        assert (g.layer, g.sign, g.coefficient) == (f.layer, f.sign, f.coefficient)
    for layer in (1, 4):
        ref_idx = {f.index for f in ref.features if f.layer == layer}
        new_idx = [g.index for g in a.features if g.layer == layer]
        assert not ref_idx & set(new_idx) and len(set(new_idx)) == len(new_idx)
    assert a.layers == ref.layers and a.method == "random"


def test_scale_sweep_multiplies_every_coefficient(data: dict[str, Any]) -> None:
    ref = select(data["accs"], data["saes"], "all")
    sel = select_method("scale-1.5", data["col"], data["saes"], reference=ref)
    assert sel.features == ref.features and sel.scale == 1.5 * ref.scale and sel.method == "scale-1.5"
    for l in ref.layers:
        np.testing.assert_allclose(sel.vectors()[l], 1.5 * ref.vectors()[l], rtol=1e-5)
    with pytest.raises(ValueError, match="scale-S"):
        check_method("scale-0")
    with pytest.raises(ValueError, match="method='best'"):
        check_method("best")


def test_diff_in_means_is_the_class_mean_difference_norm_matched(data: dict[str, Any], tmp_path: Any) -> None:
    y = data["y"]
    x = data["x"][4].astype(np.float64)
    expected = x[y == 1].mean(0) - x[y == 0].mean(0)
    np.testing.assert_allclose(diff_in_means(data["state"].resid[4]), expected, rtol=1e-9, atol=1e-12)
    ref = select(data["accs"], data["saes"], "all")
    sel = select_diff_in_means(data["state"].resid, ref)
    for l in ref.layers:
        assert np.linalg.norm(sel.vectors()[l]) == pytest.approx(np.linalg.norm(ref.vectors()[l]), rel=1e-5)
        cos = sel.vectors()[l] @ diff_in_means(data["state"].resid[l])
        assert cos > 0
    raw = select_diff_in_means(data["state"].resid, ref, norm="raw", scale=2.0)
    np.testing.assert_allclose(raw.vectors()[4], 2 * expected, rtol=1e-5)
    assert sel.features == [] and sel.method == "diff-in-means"
    back = Selection.load(sel.save(tmp_path / "dim"))  # vectors without features round-trip
    assert back.method == "diff-in-means" and back.features == []
    np.testing.assert_array_equal(back.vectors()[4], sel.vectors()[4])


def test_shuffled_selects_from_the_shuffled_accumulators(data: dict[str, Any]) -> None:
    sel = select_method("shuffled", data["col"], data["saes"])
    ref = select(data["state"].shuffled[0], data["saes"], "all")
    assert sel.method == "shuffled" and [(f.layer, f.index) for f in sel.features] == \
        [(f.layer, f.index) for f in ref.features]


def test_methods_needing_state_refuse_a_plain_collection(data: dict[str, Any]) -> None:
    plain = SimpleNamespace(accumulators=data["accs"], controls=None)
    for method in ("shuffled", "fisher", "diff-in-means"):
        with pytest.raises(ValueError, match="controls=True"):
            select_method(method, plain, data["saes"])
    assert select_method("mi", plain, data["saes"]).features  # MI needs only the CorrSteer accumulator


def test_point_biserial_still_matches_scipy_after_moments(data: dict[str, Any]) -> None:
    r = data["accs"][1].correlation()
    assert r[3] == pytest.approx(stats.pearsonr(data["z"][1][:, 3], data["y"])[0], abs=1e-9)
    m = data["accs"][1].moments()
    assert m["n"] == len(data["y"]) and m["n_pos"] == data["y"].sum()
    np.testing.assert_array_equal(m["n_active"], (data["z"][1] > 0).sum(0))
    np.testing.assert_array_equal(m["n_pos_active"], ((data["z"][1] > 0) & (data["y"][:, None] == 1)).sum(0))
    z64 = data["z"][1].astype(np.float64)
    np.testing.assert_allclose(m["m2"], ((z64 - z64.mean(0)) ** 2).sum(0), rtol=1e-10)
