"""corrsteer.SAE encode / decode / encode_pooled (C core) against the NumPy twin.

Two kinds of data:
- dyadic data (small integers over powers of two): every product and partial sum is
  exact in float32, so BLAS order cannot matter and C must equal the twin bit for bit,
  including JumpReLU values exactly at the threshold and TopK ties;
- Gaussian data: float32 GEMM error is bounded by ~d_in·u·Σ|x||W| (u = 6e-8), so we
  allow 1e-5 relative to that per-element scale, and exclude the few elements whose
  discrete decision (threshold side, TopK membership) lies within that tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import corrsteer
from corrsteer.core import reference

# (n_rows, d_in, d_sae): d_sae 1031 and 4099 are not multiples of any block size.
SHAPES = [(1, 8, 1), (3, 16, 37), (17, 33, 1031), (5, 9, 4099), (1, 1, 5)]
ARCHS = [("jumprelu", None), ("relu", None), ("topk", 1), ("topk", "half"), ("topk", "all")]


def resolve_k(k, d_sae):
    return {"half": max(1, d_sae // 2), "all": d_sae}.get(k, k)


def make_sae(seed, d_in, d_sae, architecture="jumprelu", k=None, apply_b_dec=False, dyadic=False):
    rng = np.random.default_rng(seed)
    if dyadic:
        def draw(shape, scale):
            return (rng.integers(-4, 5, shape) / scale).astype(np.float32)
        W_enc, b_enc, b_dec = draw((d_in, d_sae), 8), draw(d_sae, 8), draw(d_in, 4)
        threshold = (rng.integers(0, 5, d_sae) / 8).astype(np.float32)
    else:
        W_enc = (rng.standard_normal((d_in, d_sae)) / np.sqrt(d_in)).astype(np.float32)
        b_enc = (0.1 * rng.standard_normal(d_sae)).astype(np.float32)
        b_dec = rng.standard_normal(d_in).astype(np.float32)
        threshold = np.abs(0.3 * rng.standard_normal(d_sae)).astype(np.float32)
    W_dec = rng.standard_normal((d_sae, d_in)).astype(np.float32)
    return corrsteer.SAE(W_enc, b_enc, W_dec, b_dec,
                         threshold=threshold if architecture == "jumprelu" else None,
                         architecture=architecture, k=resolve_k(k, d_sae),
                         apply_b_dec_to_input=apply_b_dec)


def make_x(seed, shape, dyadic=False):
    rng = np.random.default_rng(seed + 1000)
    if dyadic:
        return (rng.integers(-4, 5, shape) / 4).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("n_rows,d_in,d_sae", SHAPES)
@pytest.mark.parametrize("architecture,k", ARCHS)
@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_encode_equals_reference_exactly_on_dyadic_data(n_rows, d_in, d_sae, architecture, k, apply_b_dec):
    sae = make_sae(0, d_in, d_sae, architecture, k, apply_b_dec, dyadic=True)
    x = make_x(0, (n_rows, d_in), dyadic=True)
    f = sae.encode(x)
    assert f.dtype == np.float32 and f.shape == (n_rows, d_sae)
    np.testing.assert_array_equal(f, reference.sae_encode(sae, x),
                                  err_msg=f"shape={(n_rows, d_in, d_sae)} arch={architecture} k={sae.k}")


def decision_tolerance(sae, x):
    """Per-element bound on |pre_float32 - pre_exact|: 1e-5 · (|x - b_dec| @ |W_enc| + |b_enc|)."""
    x64 = x.astype(np.float64) - (sae.b_dec if sae.apply_b_dec_to_input else 0.0)
    return 1e-5 * (np.abs(x64) @ np.abs(sae.W_enc.astype(np.float64)) + np.abs(sae.b_enc))


@pytest.mark.parametrize("n_rows,d_in,d_sae", [(3, 16, 37), (17, 64, 1031), (40, 48, 4099)])
@pytest.mark.parametrize("architecture,k", ARCHS)
@pytest.mark.parametrize("seed", [1, 2])
def test_encode_matches_reference_on_gaussian_data(n_rows, d_in, d_sae, architecture, k, seed):
    sae = make_sae(seed, d_in, d_sae, architecture, k, apply_b_dec=seed == 2)
    x = make_x(seed, (n_rows, d_in))
    where = f"shape={(n_rows, d_in, d_sae)} arch={architecture} k={sae.k} seed={seed}"
    f, f_ref = sae.encode(x).astype(np.float64), reference.sae_encode(sae, x).astype(np.float64)
    pre = reference.preactivation(sae, x)
    tol = decision_tolerance(sae, x)
    ambiguous = np.zeros(f.shape, dtype=bool)
    if architecture == "jumprelu":
        ambiguous = np.abs(pre - sae.threshold) <= tol
    elif architecture == "topk" and sae.k < d_sae:
        # Only elements within rounding distance of the row's k-th largest can swap membership.
        kth = np.sort(pre, axis=1)[:, d_sae - sae.k][:, None]
        ambiguous = np.abs(pre - kth) <= 2 * tol.max(axis=1, keepdims=True)
    assert ambiguous.mean() < 0.05, where  # the comparison below must cover almost everything
    np.testing.assert_array_less(np.abs(f - f_ref)[~ambiguous], tol[~ambiguous] + 1e-30, err_msg=where)
    # Ambiguous elements are either dropped or kept with a value within tolerance.
    kept = f[ambiguous] != 0
    assert np.all(np.abs(f[ambiguous][kept] - pre[ambiguous][kept]) <= tol[ambiguous][kept]), where


def test_encode_topk_ties_across_blocks_go_to_lower_index():
    d_sae = 4099
    W_enc = np.zeros((2, d_sae), np.float32)
    W_enc[0, [5, 1100, 2050, 4098]] = 1.0  # equal pre, spread over blocks
    W_enc[1, 3000] = 2.0                   # the unique maximum
    zeros = np.zeros(d_sae, np.float32)
    for k, kept in [(1, [3000]), (2, [5, 3000]), (3, [5, 1100, 3000]), (5, [5, 1100, 2050, 3000, 4098])]:
        sae = corrsteer.SAE(W_enc, zeros, np.zeros((d_sae, 2), np.float32), np.zeros(2, np.float32),
                            architecture="topk", k=k)
        f = sae.encode(np.array([[1.0, 1.0]], np.float32))
        assert np.flatnonzero(f[0]).tolist() == kept, f"k={k}"


def test_encode_jumprelu_is_strict_at_threshold():
    threshold = np.array([0.5, 0.0, 1.5, 0.25], np.float32)
    sae = corrsteer.SAE(np.eye(4, dtype=np.float32), np.zeros(4, np.float32), np.eye(4, dtype=np.float32),
                        np.zeros(4, np.float32), threshold=threshold)
    f = sae.encode(np.array([[0.5, 0.25, 1.0, -1.0]], np.float32))
    assert f.tolist() == [[0.0, 0.25, 0.0, 0.0]]


@pytest.mark.parametrize("shape", [(6,), (2, 3, 6), (1, 1, 1, 6)])
def test_encode_accepts_any_leading_shape(shape):
    sae = make_sae(3, 6, 11, "relu")
    x = make_x(3, shape)
    f = sae.encode(x)
    assert f.shape == shape[:-1] + (11,)
    np.testing.assert_allclose(f.reshape(-1, 11), sae.encode(x.reshape(-1, 6)), rtol=0, atol=0)


def test_decode_matches_reference():
    sae = make_sae(4, 24, 300, "relu")
    f = np.maximum(make_x(4, (7, 300)), 0)
    x_hat = sae.decode(f)
    assert x_hat.dtype == np.float32 and x_hat.shape == (7, 24)
    scale = np.abs(f.astype(np.float64)) @ np.abs(sae.W_dec.astype(np.float64)) + np.abs(sae.b_dec)
    assert np.all(np.abs(x_hat - reference.sae_decode(sae, f)) <= 1e-5 * scale)


# (n_seq, n_tok, d_in, d_sae): n_tok = 1, n_seq = 1, odd d_sae; masks include an all-masked sequence.
POOL_SHAPES = [(1, 1, 8, 37), (4, 1, 8, 37), (1, 9, 16, 1031), (5, 13, 12, 4099), (3, 300, 8, 64)]


@pytest.mark.parametrize("n_seq,n_tok,d_in,d_sae", POOL_SHAPES)
@pytest.mark.parametrize("architecture,k", [("jumprelu", None), ("relu", None), ("topk", 1), ("topk", "half")])
@pytest.mark.parametrize("mode", ["max", "mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_encode_pooled_matches_reference(n_seq, n_tok, d_in, d_sae, architecture, k, mode, seed):
    sae = make_sae(seed, d_in, d_sae, architecture, k, apply_b_dec=seed == 1, dyadic=True)
    x = make_x(seed, (n_seq, n_tok, d_in), dyadic=True)
    mask = np.random.default_rng(seed).random((n_seq, n_tok)) < 0.6
    if n_seq > 1:
        mask[1] = False
    where = f"shape={(n_seq, n_tok, d_in, d_sae)} arch={architecture} k={sae.k} mode={mode} seed={seed}"
    z = sae.encode_pooled(x, mask, mode=mode)
    z_ref = reference.sae_encode_pooled(sae, x, mask, mode)
    assert z.dtype == np.float32 and z.shape == (n_seq, d_sae), where
    if mode == "max":  # dyadic data: exact
        np.testing.assert_array_equal(z, z_ref, err_msg=where)
    else:  # sum / count rounds once
        np.testing.assert_allclose(z, z_ref, rtol=1e-6, atol=1e-7, err_msg=where)
    if n_seq > 1:
        assert not z[1].any(), where


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_encode_pooled_gaussian_and_no_mask(mode):
    sae = make_sae(5, 64, 2000, "relu")
    x = make_x(5, (3, 40, 64))
    z = sae.encode_pooled(x, None, mode=mode)
    z_ref = reference.sae_encode_pooled(sae, x, None, mode)
    scale = np.abs(x.reshape(-1, 64).astype(np.float64)) @ np.abs(sae.W_enc.astype(np.float64))
    np.testing.assert_allclose(z, z_ref, rtol=0, atol=1e-5 * scale.max())
    np.testing.assert_array_equal(z, sae.encode_pooled(x, np.ones((3, 40), bool), mode=mode))


def test_encode_pooled_equals_encode_then_pool():
    sae = make_sae(6, 16, 777, "topk", 9, dyadic=True)
    x = make_x(6, (2, 5, 16), dyadic=True)
    mask = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 1]], bool)
    f = sae.encode(x)
    z = sae.encode_pooled(x, mask, mode="max")
    np.testing.assert_array_equal(z[0], f[0][mask[0]].max(0))
    np.testing.assert_array_equal(z[1], f[1, 4])
