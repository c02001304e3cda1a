"""The pure-NumPy twin (corrsteer.core.reference) against brute force and scipy.

The twin is the specification the C core is tested against, so it is itself checked
here against element-by-element loops, ``scipy.stats.pointbiserialr`` and
``np.corrcoef``. Nothing in this file needs the C extension.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from corrsteer.core import reference as R


def random_sae(rng: np.random.Generator, d_in: int, d_sae: int) -> dict:
    return {
        "W_enc": rng.standard_normal((d_in, d_sae)).astype(np.float32),
        "b_enc": rng.standard_normal(d_sae).astype(np.float32) * 0.1,
        "b_dec": rng.standard_normal(d_in).astype(np.float32),
        "threshold": np.abs(rng.standard_normal(d_sae)).astype(np.float32) * 0.5,
        "architecture": "jumprelu",
    }


def brute_encode(x, sae, architecture, k, apply_b_dec):
    """Element-by-element encoder: the formulas of METHOD.md §1 with Python loops."""
    n_rows, d_in = x.shape
    d_sae = sae["W_enc"].shape[1]
    f = np.zeros((n_rows, d_sae))
    for i in range(n_rows):
        pre = [float(sae["b_enc"][j]) + sum(
            (float(x[i, a]) - (float(sae["b_dec"][a]) if apply_b_dec else 0.0)) * float(sae["W_enc"][a, j])
            for a in range(d_in)) for j in range(d_sae)]
        if architecture == "jumprelu":
            f[i] = [p if p > sae["threshold"][j] else 0.0 for j, p in enumerate(pre)]
        elif architecture == "relu":
            f[i] = [max(p, 0.0) for p in pre]
        else:
            keep = sorted(range(d_sae), key=lambda j: (-pre[j], j))[:k]
            for j in keep:
                f[i, j] = max(pre[j], 0.0)
    return f


@pytest.mark.parametrize("architecture,k", [("jumprelu", None), ("relu", None), ("topk", 1), ("topk", 3), ("topk", 7)])
@pytest.mark.parametrize("apply_b_dec", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_reference_encode_matches_brute_force(architecture, k, apply_b_dec, seed):
    rng = np.random.default_rng(seed)
    sae = random_sae(rng, 5, 7)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    f = R.sae_encode(dict(sae, architecture=architecture, k=k, apply_b_dec_to_input=apply_b_dec), x)
    assert f.dtype == np.float32 and f.shape == (4, 7)
    np.testing.assert_allclose(f, brute_encode(x, sae, architecture, k, apply_b_dec), rtol=1e-6, atol=1e-6)


def identity_sae(d: int, **options) -> dict:
    z = np.zeros(d, np.float32)
    return dict(W_enc=np.eye(d, dtype=np.float32), b_enc=z, b_dec=z, **options)


def test_reference_topk_ties_go_to_lower_index():
    x = np.array([[1, 3, 3, 2, 3, 0]], dtype=np.float32)
    f = R.sae_encode(identity_sae(6, architecture="topk", k=2), x)
    assert f.tolist() == [[0, 3, 3, 0, 0, 0]]
    f = R.sae_encode(identity_sae(6, architecture="topk", k=4), x)
    assert f.tolist() == [[0, 3, 3, 2, 3, 0]]


def test_reference_topk_relus_kept_negatives_and_k_equal_d_sae_is_relu():
    x = np.array([[-1, -2, -3, -4]], dtype=np.float32)
    assert R.sae_encode(identity_sae(4, architecture="topk", k=2), x).tolist() == [[0, 0, 0, 0]]
    x = np.array([[1, -2, 3, 0.5]], dtype=np.float32)
    assert np.array_equal(R.sae_encode(identity_sae(4, architecture="topk", k=4), x),
                          R.sae_encode(identity_sae(4, architecture="relu"), x))


def test_reference_jumprelu_is_strict_at_threshold():
    x = np.array([[0.5, 0.25, 1.0]], dtype=np.float32)
    sae = identity_sae(3, architecture="jumprelu", threshold=np.array([0.5, 0.0, 1.5], np.float32))
    assert R.sae_encode(sae, x).tolist() == [[0.0, 0.25, 0.0]]
    assert R.sae_encode(sae, x[0]).shape == (3,) and R.sae_encode(sae, x[None]).shape == (1, 1, 3)


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_reference_encode_pooled_matches_loops(mode):
    rng = np.random.default_rng(3)
    sae = random_sae(rng, 6, 9)
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    mask = rng.random((3, 5)) < 0.6
    mask[1] = False  # an all-masked sequence pools to 0
    z = R.sae_encode_pooled(sae, x, mask, mode)
    for i in range(3):
        rows = [R.sae_encode(sae, x[i, t]) for t in range(5) if mask[i, t]]
        expect = np.zeros(9) if not rows else (np.max(rows, 0) if mode == "max" else np.mean(rows, 0))
        np.testing.assert_allclose(z[i], expect, rtol=1e-6, atol=1e-7)
    seq = np.where(mask, np.arange(3)[:, None], -1).reshape(-1)
    z_rows, counts = R.sae_pool_rows(sae, x.reshape(15, 6), seq, 3, mode)
    np.testing.assert_allclose(z_rows, z, rtol=1e-6, atol=1e-7)
    assert counts.tolist() == mask.sum(1).tolist()
    np.testing.assert_array_equal(R.sae_encode_pooled(sae, x, None, mode),
                                  R.sae_encode_pooled(sae, x, np.ones((3, 5), bool), mode))


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_reference_pooler_steps_equal_encode_pooled(mode):
    rng = np.random.default_rng(4)
    sae = random_sae(rng, 6, 9)
    x = rng.standard_normal((4, 7, 6)).astype(np.float32)
    mask = rng.random((4, 7)) < 0.7
    mask[2] = False
    pooler = R.Pooler(sae, 4, mode)
    for t in range(7):
        pooler.push(x[:, t], mask[:, t])
    expect = R.sae_encode_pooled(sae, x, mask, mode)
    np.testing.assert_allclose(pooler.result(), expect, rtol=1e-6, atol=1e-7)
    assert pooler.counts.tolist() == mask.sum(1).tolist()
    pooler.reset()
    assert not pooler.result().any() and not pooler.counts.any()


def brute_point_biserial(z, y):
    return np.array([scipy.stats.pointbiserialr(y, z[:, j]).statistic for j in range(z.shape[1])])


@pytest.mark.parametrize("seed", range(4))
def test_reference_correlation_matches_scipy_pointbiserialr(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(200) < 0.3).astype(np.int64)
    z = (rng.standard_normal((200, 6)) + y[:, None] * rng.standard_normal(6)).astype(np.float32)
    acc = R.CorrelationAccumulator(6)
    acc.update(z, y)
    np.testing.assert_allclose(acc.correlation(), brute_point_biserial(z.astype(np.float64), y),
                               rtol=1e-12, atol=1e-14)
    pos = z[y == 1].astype(np.float64)
    np.testing.assert_allclose(acc.coefficient(), pos.mean(0), rtol=1e-12)
    assert acc.n == 200 and acc.n_positive == int(y.sum())


def test_reference_pearson_matches_corrcoef_and_binary_kind():
    rng = np.random.default_rng(5)
    y = rng.random(300)
    z = (rng.standard_normal((300, 5)) + y[:, None] * np.arange(5)).astype(np.float32)
    acc = R.CorrelationAccumulator(5, kind="pearson")
    for i in range(0, 300, 37):
        acc.update(z[i:i + 37], y[i:i + 37])
    expect = [np.corrcoef(z[:, j].astype(np.float64), y)[0, 1] for j in range(5)]
    np.testing.assert_allclose(acc.correlation(), expect, rtol=1e-11)
    np.testing.assert_allclose(acc.coefficient(), (y[:, None] * z).sum(0) / y.sum(), rtol=1e-11)
    yb = (y > 0.5).astype(np.float64)
    binary, pearson = R.CorrelationAccumulator(5), R.CorrelationAccumulator(5, kind="pearson")
    binary.update(z, yb)
    pearson.update(z, yb)
    np.testing.assert_allclose(pearson.correlation(), binary.correlation(), rtol=1e-12)
    np.testing.assert_allclose(pearson.coefficient(), binary.coefficient(), rtol=1e-12)


def test_reference_active_only_coefficient_and_frequency():
    z = np.array([[0, 2], [4, 0], [0, 0], [6, 1]], dtype=np.float32)
    y = np.array([1, 1, 0, 1])
    acc = R.CorrelationAccumulator(2)
    acc.update(z, y)
    assert acc.coefficient().tolist() == [10 / 3, 1.0]
    assert acc.coefficient(active_only=True).tolist() == [5.0, 1.5]
    assert acc.frequency().tolist() == [0.5, 0.5]


def test_reference_constant_feature_and_degenerate_rewards():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((50, 3)).astype(np.float32)
    z[:, 1] = 0.1  # constant, not dyadic: its mean must still come out exact
    y = (np.arange(50) % 3 == 0).astype(np.int64)
    acc = R.CorrelationAccumulator(3)
    for i in range(0, 50, 7):
        acc.update(z[i:i + 7], y[i:i + 7])
    assert acc.correlation()[1] == 0.0 and acc.correlation()[0] != 0.0
    for y_const in (np.zeros(50), np.ones(50)):
        acc = R.CorrelationAccumulator(3)
        acc.update(z, y_const)
        with pytest.warns(UserWarning, match="undefined"):
            assert not acc.correlation().any()


def test_reference_top_ranks_signs_and_breaks_ties_to_lower_index():
    y = np.array([1, 0, 1, 0], dtype=np.float64)
    col = np.array([1, 0, 1, 0], dtype=np.float32)
    z = np.stack([-col, col, col * 0.5, np.zeros(4, np.float32), -col * 3], axis=1)
    acc = R.CorrelationAccumulator(5)
    acc.update(z, y)
    top = acc.top(5)
    assert top["index"].tolist() == [1, 2] and top["r"].tolist() == [1.0, 1.0]
    assert acc.top(1, "negative")["index"].tolist() == [0]
    assert acc.top(5, "negative")["index"].tolist() == [0, 4]
    assert top.dtype.names == ("index", "r", "coefficient")
    np.testing.assert_allclose(top["coefficient"], [1.0, 0.5])


def chunks(z, y, sizes):
    out, start = [], 0
    for s in sizes:
        out.append((z[start:start + s], y[start:start + s]))
        start += s
    return out


def test_reference_streaming_invariants():
    rng = np.random.default_rng(7)
    z = rng.gamma(1.0, size=(97, 11)).astype(np.float32)
    y = (rng.random(97) < 0.4).astype(np.int64)
    one = R.CorrelationAccumulator(11)
    one.update(z, y)
    many = R.CorrelationAccumulator(11)
    for zb, yb in chunks(z, y, [1, 5, 30, 2, 59]):
        many.update(zb, yb)
    left, right = R.CorrelationAccumulator(11), R.CorrelationAccumulator(11)
    left.update(z[:40], y[:40])
    right.update(z[40:], y[40:])
    resumed = copy.deepcopy(left)  # the twin has no serialisation: resuming is the C core's (to_bytes)
    resumed.update(z[40:], y[40:])
    left.merge(right)
    for acc in (many, left, resumed):
        np.testing.assert_allclose(acc.correlation(), one.correlation(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(acc.coefficient(True), one.coefficient(True), rtol=1e-12)
        np.testing.assert_allclose(acc.frequency(), one.frequency(), rtol=0)
        assert (acc.n, acc.n_positive) == (one.n, one.n_positive)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=3, max_size=3), st.integers(0, 2**16),
       st.sampled_from(["binary", "pearson"]))
def test_reference_merge_is_associative_and_commutative(sizes, seed, kind):
    rng = np.random.default_rng(seed)
    accs = []
    for s in sizes:
        acc = R.CorrelationAccumulator(4, kind)
        y = rng.integers(0, 2, s) if kind == "binary" else rng.random(s)
        acc.update(rng.standard_normal((s, 4)).astype(np.float32) + 5, y)
        accs.append(acc)
    a, b, c = (copy.deepcopy(x) for x in accs)
    a.merge(b)
    a.merge(c)  # (a + b) + c
    bc = copy.deepcopy(accs[1])
    bc.merge(accs[2])
    a_bc = copy.deepcopy(accs[0])
    a_bc.merge(bc)  # a + (b + c)
    cba = copy.deepcopy(accs[2])
    cba.merge(accs[1])
    cba.merge(accs[0])  # (c + b) + a
    for other in (a_bc, cba):
        for name in ("mean", "m2", "mean_pos", "c_zy", "m2_y"):
            np.testing.assert_allclose(getattr(other, name), getattr(a, name), rtol=1e-10, atol=1e-10)
        assert other.n == a.n and other.n_pos == pytest.approx(a.n_pos, rel=1e-14)


def test_reference_chan_update_is_exact_where_raw_sums_are_not():
    """1e6 samples around 1e4: centred moments stay within 1e-9; raw Σz, Σz² do not."""
    rng = np.random.default_rng(8)
    n, d_sae, batch = 10**6, 8, 1000
    y = (rng.random(n) < 0.3).astype(np.float64)
    z = (1e4 + rng.standard_normal((n, d_sae)) + y[:, None] * np.linspace(0.2, 1.5, d_sae)).astype(np.float32)
    acc = R.CorrelationAccumulator(d_sae)
    s1, s2, s_pos = np.zeros(d_sae), np.zeros(d_sae), np.zeros(d_sae)
    for i in range(0, n, batch):
        zb, yb = z[i:i + batch].astype(np.float64), y[i:i + batch]
        acc.update(z[i:i + batch], yb)
        s1, s2, s_pos = s1 + zb.sum(0), s2 + (zb**2).sum(0), s_pos + zb[yb == 1].sum(0)
    z64 = z.astype(np.float64)
    zc, yc = z64 - z64.mean(0), y - y.mean()
    var = (zc**2).mean(0)
    r = (zc * yc[:, None]).sum(0) / np.sqrt((zc**2).sum(0) * (yc**2).sum())
    chan_r_err = np.max(np.abs(acc.correlation() - r) / np.abs(r))
    assert np.max(np.abs(acc.m2 / n - var) / var) < 1e-9
    assert chan_r_err < 1e-9
    # The paper's reference code keeps raw sums: var = Σz²/n - (Σz/n)² cancels catastrophically.
    n_pos = y.sum()
    naive_var = s2 / n - (s1 / n) ** 2
    naive_r = ((s_pos / n_pos - (s1 - s_pos) / (n - n_pos)) / np.sqrt(naive_var)
               * np.sqrt(n_pos / n * (1 - n_pos / n)))
    naive_r_err = np.max(np.abs(naive_r - r) / np.abs(r))
    assert naive_r_err > 1e-9 and naive_r_err > 100 * chan_r_err, (naive_r_err, chan_r_err)


def test_reference_steering_vector_and_add_to_rows():
    rng = np.random.default_rng(9)
    W_dec = rng.standard_normal((6, 4)).astype(np.float32)
    v = R.steering_vector(W_dec, np.array([2, 5, 2]), np.array([1.5, -2.0, 0.5]))
    np.testing.assert_allclose(v, 2.0 * W_dec[2] - 2.0 * W_dec[5], rtol=1e-6)
    assert R.steering_vector(W_dec, np.array([], np.int64), np.array([])).tolist() == [0.0] * 4
    x = np.zeros((3, 4), np.float32)
    R.add_to_rows(x, v, np.array([True, False, True]))
    np.testing.assert_array_equal(x, np.stack([v, np.zeros(4, np.float32), v]))
    R.add_to_rows(x, v)
    np.testing.assert_array_equal(x, np.stack([2 * v, v, 2 * v]))
    with pytest.raises(ValueError, match="features"):
        R.steering_vector(W_dec, np.array([-1]), np.array([1.0]))
