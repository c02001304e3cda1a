"""Selection rules (METHOD.md §5) on fake correlations and fake validation scores."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from corrsteer.method.features import SELECTION_JSON, VECTORS_FILE, Selection
from corrsteer.method.selection import select, top_features

D = 6  # d_sae == d_in so that W_dec = I and a vector names its feature


class FakeAcc:
    """Just what selection reads from an accumulator: fixed r and coefficients."""

    def __init__(self, r: list[float], c: list[float] | None = None, n: int = 10, n_pos: int = 5) -> None:
        self.r = np.asarray(r, dtype=np.float64)
        self.c = np.asarray(c if c is not None else np.arange(1, len(r) + 1), dtype=np.float64)
        self.d_sae, self.n, self.n_positive = len(r), n, n_pos

    def correlation(self) -> np.ndarray:
        return self.r.copy()

    def coefficient(self) -> np.ndarray:
        return self.c.copy()

    def moments(self) -> dict:
        """A state whose mean over the unrewarded samples is 10 x c (so that mean_neg is told from mean_pos)."""
        mean = (self.n_positive * self.c + (self.n - self.n_positive) * 10 * self.c) / self.n
        return {"n": float(self.n), "n_pos": float(self.n_positive), "mean": mean, "mean_pos": self.c.copy()}

    def top(self, k: int, sign: str = "positive") -> np.ndarray:
        """The C core's contract (CorrelationAccumulator.top): largest r > 0 or smallest r < 0, ties to the
        lower index; coefficient = c (mean_pos)."""
        order = np.argsort(-self.r if sign == "positive" else self.r, kind="stable")
        order = order[(self.r[order] > 0) if sign == "positive" else (self.r[order] < 0)][:k]
        out = np.zeros(len(order), dtype=[("index", np.int64), ("r", np.float64), ("coefficient", np.float64)])
        out["index"], out["r"], out["coefficient"] = order, self.r[order], self.c[order]
        return out


def eye_saes(layers: list[int], scale: float = 1.0) -> dict[int, SimpleNamespace]:
    return {l: SimpleNamespace(W_dec=np.eye(D, dtype=np.float32) * scale) for l in layers}


def decode(interventions: list[tuple[int, np.ndarray]]) -> set[tuple[int, int, int]]:
    """(layer, index, sign) of every nonzero component of every vector (W_dec = I)."""
    out = set()
    for layer, v, *_site in interventions:
        for i in np.flatnonzero(v):
            out.add((layer, int(i), int(np.sign(v[i]))))
    return out


class FakeValidator:
    """Scores each candidate from a table keyed by (layer, sign); records every call."""

    def __init__(self, baseline: float, table: dict[tuple[int, int], float]) -> None:
        self.baseline, self.table, self.calls = baseline, table, []

    def __call__(self, interventions: list[tuple[int, np.ndarray]]) -> float:
        keys = decode(interventions)
        self.calls.append(keys)
        if not keys:
            return self.baseline
        (layer, _, sign), = {(l, 0, s) for l, _, s in keys}  # one candidate: one layer, one sign
        return self.table[(layer, sign)]


ACCS = {
    0: FakeAcc([0.1, 0.3, -0.2, 0.0, 0.3, -0.5]),   # i+ = 1 (tie with 4 -> lower index), i- = 5
    1: FakeAcc([0.0, -0.1, 0.6, 0.2, -0.4, 0.1]),   # i+ = 2, i- = 4
    2: FakeAcc([-0.3, -0.3, 0.0, 0.0, 0.0, 0.0]),   # no positive, i- = 0 (tie with 1)
}


def test_top_features_order_ties_and_signs() -> None:
    acc = FakeAcc([0.2, 0.5, -0.1, 0.5, -0.7, 0.0], c=[1, 2, 3, 4, 5, 6])
    pos = top_features(acc, +1, 3, layer=4)
    assert [f.index for f in pos] == [1, 3, 0]
    assert [f.coefficient for f in pos] == [2.0, 4.0, 1.0]
    assert all(f.layer == 4 and f.sign == 1 for f in pos)
    neg = top_features(acc, -1, 5, layer=4)
    assert [f.index for f in neg] == [4, 2]          # only r < 0; zero is neither sign
    assert [f.coefficient for f in neg] == [-5.0, -3.0]
    assert [f.mean_pos for f in neg] == [5.0, 3.0]


def test_negative_feature_gets_minus_abs_coefficient_even_if_c_negative() -> None:
    acc = FakeAcc([0.1, -0.4], c=[2.0, -3.0])
    (f,) = top_features(acc, -1, 1, layer=0)
    assert f.coefficient == -3.0 and f.mean_pos == -3.0 and f.mean_neg == pytest.approx(-30.0)


def test_negative_coefficient_can_be_the_mean_over_unrewarded_samples() -> None:
    """The paper subtracts -|mean_pos| (near zero: the feature fires on unrewarded samples); the option
    subtracts -|mean_neg| instead. Positive features keep mean_pos either way."""
    acc = FakeAcc([0.3, -0.4], c=[2.0, 0.5])
    (neg,) = top_features(acc, -1, 1, layer=0, negative_coefficient="mean_neg")
    assert neg.coefficient == pytest.approx(-5.0) and neg.mean_pos == 0.5
    (pos,) = top_features(acc, +1, 1, layer=0, negative_coefficient="mean_neg")
    assert pos.coefficient == 2.0
    table = {(0, 1): 0.4, (0, -1): 0.6}
    sel = select({0: acc}, {0: SimpleNamespace(W_dec=np.eye(2, dtype=np.float32))}, "pruned",
                 validate=FakeValidator(0.5, table), negative_coefficient="mean_neg")
    np.testing.assert_allclose(sel.vectors()[0], [0.0, -5.0])
    assert sel.meta["negative_coefficient"] == "mean_neg"
    with pytest.raises(ValueError, match="negative_coefficient"):
        select({0: acc}, {0: SimpleNamespace(W_dec=np.eye(2, dtype=np.float32))}, "all", negative_coefficient="x")


def test_single_takes_largest_r_over_layers_lower_layer_on_tie() -> None:
    sel = select(ACCS, eye_saes([0, 1, 2]), "single")
    assert [(f.layer, f.index, f.r) for f in sel.features] == [(1, 2, 0.6)]
    np.testing.assert_array_equal(sel.vectors()[1], 3.0 * np.eye(D, dtype=np.float32)[2])
    tie = {3: FakeAcc([0.0, 0.5]), 1: FakeAcc([0.5, 0.0])}
    sel = select(tie, {l: SimpleNamespace(W_dec=np.eye(2, dtype=np.float32)) for l in tie}, "single")
    assert [(f.layer, f.index) for f in sel.features] == [(1, 0)]
    assert [c.kept for c in sel.candidates] == [True, False]


def test_all_steers_every_layers_positive_and_skips_layers_without_one() -> None:
    sel = select(ACCS, eye_saes([0, 1, 2], scale=2.0), "all", scale=0.5)
    assert [(f.layer, f.index) for f in sel.features] == [(0, 1), (1, 2)]
    assert decode(sel.interventions()) == {(0, 1, 1), (1, 2, 1)}
    # vector = scale * c * W_dec[i] = 0.5 * 2 * (2 * e_1)
    np.testing.assert_allclose(sel.vectors()[0], 2.0 * np.eye(D)[1])
    assert sel.baseline_score is None and all(c.score is None for c in sel.candidates)


def test_top_k_candidate_steers_k_features_together() -> None:
    sel = select(ACCS, eye_saes([0, 1, 2]), "all", top_k=2)
    assert decode(sel.interventions()) == {(0, 1, 1), (0, 4, 1), (1, 2, 1), (1, 3, 1)}
    np.testing.assert_allclose(sel.vectors()[0], 2.0 * np.eye(D)[1] + 5.0 * np.eye(D)[4])


def test_global_validates_each_candidate_once_and_baseline_once() -> None:
    v = FakeValidator(0.5, {(0, 1): 0.55, (0, -1): 0.70, (1, 1): 0.60, (1, -1): 0.40, (2, -1): 0.70})
    sel = select(ACCS, eye_saes([0, 1, 2]), "global", validate=v)
    assert v.calls[0] == set()                       # baseline first, then one call per candidate
    assert len(v.calls) == 1 + 5
    # tie 0.70 between (0,-1) and (2,-1): lower layer wins
    assert [(f.layer, f.index, f.sign) for f in sel.features] == [(0, 5, -1)]
    assert sel.features[0].coefficient == -6.0
    assert decode(sel.interventions()) == {(0, 5, -1)}
    assert sel.baseline_score == 0.5


def test_global_prefers_positive_on_equal_score() -> None:
    v = FakeValidator(0.5, {(0, 1): 0.6, (0, -1): 0.6, (1, 1): 0.6, (1, -1): 0.6, (2, -1): 0.6})
    sel = select(ACCS, eye_saes([0, 1, 2]), "global", validate=v)
    assert [(f.layer, f.sign) for f in sel.features] == [(0, 1)]


def test_pruned_keeps_only_strictly_better_layers_and_prefers_positive_on_tie() -> None:
    table = {(0, 1): 0.5,                 # layer 0: both equal to baseline -> not kept (strict)
             (0, -1): 0.5,
             (1, 1): 0.6, (1, -1): 0.6,   # tie above baseline -> the positive one
             (2, -1): 0.55}               # only a negative candidate, above baseline -> kept
    sel = select(ACCS, eye_saes([0, 1, 2]), "pruned", validate=FakeValidator(0.5, table))
    assert decode(sel.interventions()) == {(1, 2, 1), (2, 0, -1)}
    kept = {(c.layer, c.sign) for c in sel.candidates if c.kept}
    assert kept == {(1, 1), (2, -1)}
    assert sel.note == ""


def test_pruned_keeps_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    table = {(0, 1): 0.5, (0, -1): 0.4, (1, 1): 0.3, (1, -1): 0.5, (2, -1): 0.1}
    with caplog.at_level(logging.WARNING, logger="corrsteer.method.selection"):
        sel = select(ACCS, eye_saes([0, 1, 2]), "pruned", validate=FakeValidator(0.5, table))
    assert sel.features == [] and sel.vectors() == {} and sel.interventions() == []
    assert "nothing kept" in sel.note and "nothing kept" in caplog.text
    assert not any(c.kept for c in sel.candidates)


def test_degenerate_rewards_give_no_candidate(caplog: pytest.LogCaptureFixture) -> None:
    accs = {0: FakeAcc([0.0, 0.0], n=4, n_pos=4)}
    with caplog.at_level(logging.WARNING, logger="corrsteer.method.selection"):
        sel = select(accs, {0: SimpleNamespace(W_dec=np.eye(2, dtype=np.float32))}, "all")
    assert sel.features == [] and "steering nothing" in sel.note
    assert "every correlation is 0" in caplog.text



@pytest.mark.parametrize("n_pos, warned", [(1, True), (115, True), (9, True), (10, False), (0, False)])
def test_tiny_reward_class_is_warned(caplog: pytest.LogCaptureFixture, n_pos: int, warned: bool) -> None:
    # SmolLM2 on HarmBench refused 1 of 116 training prompts: r then rests on one sample
    accs = {0: FakeAcc([0.3, -0.2], n=116, n_pos=n_pos), 3: FakeAcc([0.1, 0.2], n=116, n_pos=n_pos)}
    with caplog.at_level(logging.WARNING, logger="corrsteer.method.selection"):
        select(accs, {l: SimpleNamespace(W_dec=np.eye(2, dtype=np.float32)) for l in accs}, "all")
    assert caplog.text.count("close to arbitrary") == int(warned)  # once, not per layer
    if warned:
        assert f"only {min(n_pos, 116 - n_pos)} of the 116 collection samples are" in caplog.text

def test_select_with_real_accumulator_finds_the_reward_feature() -> None:
    from corrsteer.core.reference import CorrelationAccumulator

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    z = rng.random((200, 8)).astype(np.float32)
    z[:, 5] = 2.0 * y + 0.1 * z[:, 5]          # tracks the reward
    z[:, 2] = 1.0 - y + 0.5 * z[:, 2]          # anti-tracks it
    acc = CorrelationAccumulator(8)
    acc.update(z, y)
    W_dec = rng.standard_normal((8, 4)).astype(np.float32)
    sel = select({3: acc}, {3: SimpleNamespace(W_dec=W_dec)}, "single")
    (f,) = sel.features
    assert (f.layer, f.index) == (3, 5)
    assert f.coefficient == pytest.approx(z[y == 1, 5].mean(), rel=1e-6)
    np.testing.assert_allclose(sel.vectors()[3], f.coefficient * W_dec[5], rtol=1e-6)
    # pruned: the negative candidate (feature 2, subtracted) validates better than the positive one
    def validate(iv: list[tuple[int, np.ndarray]]) -> float:
        if not iv:
            return 0.5
        v = iv[0][1]
        cos = float(v @ W_dec[2]) / (np.linalg.norm(v) * np.linalg.norm(W_dec[2]))
        return 0.9 if cos < -0.999 else 0.4   # only "minus W_dec[2]" helps

    sel = select({3: acc}, {3: SimpleNamespace(W_dec=W_dec)}, "pruned", validate=validate)
    assert [(f.index, f.sign) for f in sel.features] == [(2, -1)]
    assert sel.features[0].coefficient == pytest.approx(-z[y == 1, 2].mean(), abs=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="best"), "mode='best' is not valid; choose one of single, global, all, pruned"),
    (dict(mode="pruned"), "needs validate"),
    (dict(mode="global", validate=3), "needs validate"),
    (dict(mode="all", top_k=0), "top_k"),
    (dict(mode="all", scale=float("nan")), "scale"),
])
def test_select_rejects_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select(ACCS, eye_saes([0, 1, 2]), **kwargs)


def test_select_rejects_missing_sae_and_mismatched_d_sae() -> None:
    with pytest.raises(ValueError, match="no SAE for layer 2"):
        select(ACCS, eye_saes([0, 1]), "all")
    saes = eye_saes([0, 1])
    saes[2] = SimpleNamespace(W_dec=np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="d_sae=6 but the SAE has d_sae=4"):
        select(ACCS, saes, "all")
    with pytest.raises(ValueError, match="empty"):
        select({}, saes, "all")


def test_select_rejects_nonfinite_validation_score() -> None:
    with pytest.raises(ValueError, match="finite"):
        select(ACCS, eye_saes([0, 1, 2]), "global", validate=lambda iv: float("nan"))


def test_save_load_round_trip(tmp_path) -> None:
    table = {(0, 1): 0.7, (0, -1): 0.4, (1, 1): 0.3, (1, -1): 0.6, (2, -1): 0.1}
    sel = select(ACCS, eye_saes([0, 1, 2]), "pruned", validate=FakeValidator(0.5, table), scale=1.5)
    sel.meta["task"] = "t"
    sel.save(tmp_path / "sel")
    back = Selection.load(tmp_path / "sel")
    assert isinstance(back, Selection)
    assert back.to_dict() == sel.to_dict()
    assert [layer for layer, *_ in back.interventions()] == [0, 1]
    for (la, va, _), (lb, vb, _) in zip(sel.interventions(), back.interventions()):
        assert la == lb and va.dtype == vb.dtype == np.float32
        np.testing.assert_array_equal(va, vb)
    doc = json.loads((tmp_path / "sel" / SELECTION_JSON).read_text())
    assert {"layer", "index", "sign", "r", "coefficient"} <= set(doc["features"][0])
    assert doc["baseline_score"] == 0.5 and len(doc["candidates"]) == 5


def test_save_load_empty_selection(tmp_path) -> None:
    sel = select({0: FakeAcc([0.0, 0.0], n=4, n_pos=0)}, {0: SimpleNamespace(W_dec=np.eye(2, dtype=np.float32))},
                 "all")
    back = Selection.load(sel.save(tmp_path))
    assert back.features == [] and back.interventions() == []


def test_load_selection_rejects_missing_and_mismatched_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="lacks selection.json, vectors.safetensors"):
        Selection.load(tmp_path / "nowhere")
    sel = select(ACCS, eye_saes([0, 1, 2]), "all")
    sel.save(tmp_path)
    (tmp_path / VECTORS_FILE).unlink()
    with pytest.raises(ValueError, match="lacks vectors.safetensors"):
        Selection.load(tmp_path)
    select(ACCS, eye_saes([0, 1, 2]), "single").save(tmp_path / "other")
    (tmp_path / "other" / VECTORS_FILE).rename(tmp_path / VECTORS_FILE)
    with pytest.raises(ValueError, match="do not belong together"):
        Selection.load(tmp_path)
    (tmp_path / SELECTION_JSON).write_text("{not json")
    with pytest.raises(ValueError, match="malformed"):
        Selection.load(tmp_path)
    (tmp_path / SELECTION_JSON).write_text(json.dumps({"mode": "all"}))
    with pytest.raises(ValueError, match="malformed"):
        Selection.load(tmp_path)


def test_sae_site_travels_with_the_vector(tmp_path) -> None:
    saes = eye_saes([0, 1, 2])
    saes[1].site = "resid_pre"
    v = FakeValidator(0.5, {(0, 1): 0.6, (0, -1): 0.4, (1, 1): 0.7, (1, -1): 0.4, (2, -1): 0.4})
    calls: list = []
    sel = select(ACCS, saes, "pruned", validate=lambda iv: calls.append(iv) or v(iv))
    assert [iv[0][2] for iv in calls[1:]] == ["resid_post", "resid_post", "resid_pre", "resid_pre", "resid_post"]
    assert [layer for layer, *_ in sel.interventions()] == [0, 1]
    assert sel.interventions()[1][2] == "resid_pre"
    back = Selection.load(sel.save(tmp_path))
    assert back.sites == {0: "resid_post", 1: "resid_pre"} and back.interventions()[1][2] == "resid_pre"
    saes[2].site = "mlp_out"  # capture and steer cannot attach there: refused when the selection is made
    with pytest.raises(ValueError, match="mlp_out"):
        select({2: FakeAcc([0.5, 0.0, 0.0, 0.0, 0.0, 0.0])}, saes, "all")


def test_load_selection_rejects_a_corrupt_vectors_file(tmp_path) -> None:
    select(ACCS, eye_saes([0, 1, 2]), "all").save(tmp_path)
    data = (tmp_path / VECTORS_FILE).read_bytes()
    (tmp_path / VECTORS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Selection.load(tmp_path)
