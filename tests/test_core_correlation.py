"""corrsteer.core.CorrelationAccumulator (C core) against its NumPy twin, scipy and itself.

Tolerances: the C core and the twin both keep float64 centred moments; they differ
only in summation order, so r (bounded by 1) agrees to 1e-10 absolute and the
coefficients to 1e-10 relative. Invariants that are pure bookkeeping (n, counts,
frequency) are compared exactly.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from corrsteer.core import CorrelationAccumulator, reference

R_ATOL = 1e-10
C_RTOL = 1e-10


def make_data(seed: int, n: int, d_sae: int, kind: str = "binary", offset: float = 0.0):
    """Pooled-looking activations (many exact zeros) correlated with the reward."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.float64) if kind == "binary" else rng.random(n)
    effect = rng.standard_normal(d_sae)
    z = np.maximum(rng.standard_normal((n, d_sae)) + y[:, None] * effect, 0.0) + offset
    return z.astype(np.float32), y


def assert_same(acc, twin, where=""):
    assert acc.n == twin.n and acc.n_positive == pytest.approx(twin.n_positive, rel=1e-13), where
    np.testing.assert_allclose(acc.correlation(), twin.correlation(), rtol=0, atol=R_ATOL, err_msg=where)
    for active_only in (False, True):
        np.testing.assert_allclose(acc.coefficient(active_only=active_only),
                                   twin.coefficient(active_only=active_only),
                                   rtol=C_RTOL, atol=1e-12, err_msg=where)
    np.testing.assert_array_equal(acc.frequency(), twin.frequency(), err_msg=where)


@pytest.mark.parametrize("kind", ["binary", "pearson"])
@pytest.mark.parametrize("n,d_sae,batch", [(2, 1, 2), (50, 7, 50), (333, 1000, 41), (64, 4099, 9)])
@pytest.mark.parametrize("seed", [0, 1])
def test_corr_matches_reference(kind, n, d_sae, batch, seed):
    z, y = make_data(seed, n, d_sae, kind)
    if kind == "binary":
        y[:2] = [0, 1]  # never degenerate
    acc, twin = CorrelationAccumulator(d_sae, kind=kind), reference.CorrelationAccumulator(d_sae, kind)
    for i in range(0, n, batch):
        acc.update(z[i:i + batch], y[i:i + batch])
        twin.update(z[i:i + batch], y[i:i + batch])
    assert (acc.d_sae, acc.kind) == (d_sae, kind)
    assert_same(acc, twin, f"kind={kind} n={n} d_sae={d_sae} batch={batch} seed={seed}")
    for sign in ("positive", "negative"):
        k = min(5, d_sae)
        got, want = acc.top(k, sign=sign), twin.top(k, sign=sign)
        assert got.dtype.names == ("index", "r", "coefficient")
        np.testing.assert_array_equal(got["index"], want["index"])
        np.testing.assert_allclose(got["r"], want["r"], rtol=0, atol=R_ATOL)
        np.testing.assert_allclose(got["coefficient"], want["coefficient"], rtol=C_RTOL)


@pytest.mark.parametrize("seed", range(3))
def test_corr_matches_scipy_pointbiserialr(seed):
    z, y = make_data(seed, 120, 9)
    acc = CorrelationAccumulator(9)
    acc.update(z, y)
    expect = [scipy.stats.pointbiserialr(y, z[:, j].astype(np.float64)).statistic for j in range(9)]
    np.testing.assert_allclose(acc.correlation(), expect, rtol=0, atol=1e-12)
    np.testing.assert_allclose(acc.coefficient(), z[y == 1].astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.frequency(), (z > 0).mean(0), rtol=0, atol=1e-15)


def test_corr_pearson_matches_corrcoef():
    z, y = make_data(3, 150, 6, kind="pearson")
    acc = CorrelationAccumulator(6, kind="pearson")
    acc.update(z[:70], y[:70])
    acc.update(z[70:], y[70:])
    expect = [np.corrcoef(z[:, j].astype(np.float64), y)[0, 1] for j in range(6)]
    np.testing.assert_allclose(acc.correlation(), expect, rtol=0, atol=1e-12)
    np.testing.assert_allclose(acc.coefficient(), (y[:, None] * z).sum(0) / y.sum(), rtol=1e-12)


def test_corr_streaming_invariants(tmp_path):
    """One update = many small updates = merge of halves = resumed from bytes/pickle/file."""
    z, y = make_data(4, 211, 37)
    one = CorrelationAccumulator(37)
    one.update(z, y)
    many = CorrelationAccumulator(37)
    for start, stop in [(0, 1), (1, 8), (8, 100), (100, 101), (101, 211)]:
        many.update(z[start:stop], y[start:stop])
    left, right = CorrelationAccumulator(37), CorrelationAccumulator(37)
    left.update(z[:90], y[:90])
    right.update(z[90:], y[90:])
    via_bytes = CorrelationAccumulator.from_bytes(left.to_bytes())
    via_pickle = pickle.loads(pickle.dumps(left))
    left.save(tmp_path / "half.acc")
    via_file = CorrelationAccumulator.load(tmp_path / "half.acc")
    for acc in (via_bytes, via_pickle, via_file):
        acc.update(z[90:], y[90:])
    merged = CorrelationAccumulator.from_bytes(left.to_bytes())
    merged.merge(right)
    twin = reference.CorrelationAccumulator(37)
    twin.update(z, y)
    for name, acc in [("one", one), ("many", many), ("merged", merged), ("bytes", via_bytes),
                      ("pickle", via_pickle), ("file", via_file)]:
        assert_same(acc, twin, name)
    assert right.n == 121  # merge leaves its argument unchanged
    assert [p.name for p in tmp_path.iterdir()] == ["half.acc"]  # atomic save leaves no temp file


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(4)), st.integers(0, 2**16))
def test_corr_merge_order_does_not_matter(order, seed):
    z, y = make_data(seed, 40, 5, offset=3.0)
    y[:2] = [0, 1]
    shards = []
    for i in range(4):
        acc = CorrelationAccumulator(5)
        acc.update(z[i * 10:(i + 1) * 10], y[i * 10:(i + 1) * 10])
        shards.append(acc)
    forward = CorrelationAccumulator(5)
    for acc in shards:
        forward.merge(acc)
    permuted = CorrelationAccumulator(5)
    for i in order:
        permuted.merge(shards[i])
    np.testing.assert_allclose(permuted.correlation(), forward.correlation(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(permuted.coefficient(), forward.coefficient(), rtol=1e-12)
    assert (permuted.n, permuted.n_positive) == (40, int(y.sum()))


def test_corr_constant_feature_gives_zero_r():
    z, y = make_data(5, 60, 4)
    z[:, 1] = 0.1  # constant and not a power of two
    z[:, 2] = 0.0  # never active
    acc = CorrelationAccumulator(4)
    for i in range(0, 60, 7):
        acc.update(z[i:i + 7], y[i:i + 7])
    r = acc.correlation()
    assert r[1] == 0.0 and r[2] == 0.0 and r[0] != 0.0 and r[3] != 0.0
    assert acc.frequency()[2] == 0.0 and acc.coefficient(active_only=True)[2] == 0.0


@pytest.mark.parametrize("kind,y_value", [("binary", 0.0), ("binary", 1.0), ("pearson", 0.5)])
def test_corr_constant_rewards_give_zero_r_and_warn(kind, y_value):
    z, _ = make_data(6, 30, 5)
    acc = CorrelationAccumulator(5, kind=kind)
    acc.update(z, np.full(30, y_value))
    with pytest.warns(UserWarning):
        r = acc.correlation()
    assert r.shape == (5,) and r.dtype == np.float64 and not r.any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # top() may repeat the warning
        assert len(acc.top(3)) == 0
    if kind == "binary" and y_value == 0.0:
        assert not acc.coefficient().any()


def test_corr_top_breaks_ties_to_lower_index_and_filters_sign():
    col = np.array([1, 0, 1, 0, 1, 0], dtype=np.float32)
    y = col.astype(np.float64)
    z = np.stack([-col, col, 2 * col, np.zeros(6, np.float32), col, -col], axis=1)
    acc = CorrelationAccumulator(6)
    acc.update(z, y)
    top = acc.top(6)
    assert top["index"].tolist() == [1, 2, 4]  # r = 1 for all three: index order
    np.testing.assert_allclose(top["r"], 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(top["coefficient"], [1.0, 2.0, 1.0], rtol=1e-15)
    assert acc.top(2)["index"].tolist() == [1, 2]
    assert acc.top(6, sign="negative")["index"].tolist() == [0, 5]


def test_corr_reset_returns_to_empty():
    z, y = make_data(7, 20, 3)
    acc = CorrelationAccumulator(3)
    acc.update(z, y)
    acc.reset()
    assert acc.n == 0 and acc.n_positive == 0
    acc.update(z[:10], y[:10])
    twin = reference.CorrelationAccumulator(3)
    twin.update(z[:10], y[:10])
    assert_same(acc, twin, "after reset")


def test_corr_one_million_samples_near_1e4_match_two_pass():
    """1e6 samples of 1e4 + N(0, 1): r within 1e-9 relative of a two-pass float64 result.

    The contrast with raw sums (Σz, Σz²), which miss this by orders of magnitude, is
    asserted on the twin in tests/test_core_reference.py.
    """
    rng = np.random.default_rng(8)
    n, d_sae, batch = 10**6, 8, 4096
    y = (rng.random(n) < 0.3).astype(np.float64)
    z = (1e4 + rng.standard_normal((n, d_sae)) + y[:, None] * np.linspace(0.2, 1.5, d_sae)).astype(np.float32)
    acc = CorrelationAccumulator(d_sae)
    for i in range(0, n, batch):
        acc.update(z[i:i + batch], y[i:i + batch])
    z64 = z.astype(np.float64)
    zc, yc = z64 - z64.mean(0), y - y.mean()
    r = (zc * yc[:, None]).sum(0) / np.sqrt((zc**2).sum(0) * (yc**2).sum())
    assert np.max(np.abs(acc.correlation() - r) / np.abs(r)) < 1e-9
    mean_pos = z64[y == 1].mean(0)
    assert np.max(np.abs(acc.coefficient() - mean_pos) / mean_pos) < 1e-12
