"""Every core entry point fed bad input raises ValueError/TypeError naming the argument.

Also: float32 C-contiguous inputs pass without a copy (observable through
``kernels.as_float32`` and in-place ``add_to_rows``), and float64 / strided inputs
give the result of their float32 C-contiguous copy.
"""

from __future__ import annotations

import numpy as np
import pytest

import corrsteer
from corrsteer.core import CorrelationAccumulator, kernels

D_IN, D_SAE = 6, 10


def make_sae(architecture="jumprelu", k=None, **overrides):
    rng = np.random.default_rng(0)
    args = dict(W_enc=rng.standard_normal((D_IN, D_SAE)).astype(np.float32),
                b_enc=np.zeros(D_SAE, np.float32),
                W_dec=rng.standard_normal((D_SAE, D_IN)).astype(np.float32),
                b_dec=np.zeros(D_IN, np.float32),
                threshold=np.full(D_SAE, 0.1, np.float32) if architecture == "jumprelu" else None,
                architecture=architecture, k=k)
    args.update(overrides)
    return corrsteer.SAE(**args)


SAE_CASES = [
    (dict(W_enc=np.ones((D_IN, D_SAE), np.int32)), TypeError, "W_enc"),
    (dict(W_enc=np.ones((D_IN, D_SAE, 1), np.float32)), ValueError, "W_enc"),
    (dict(b_enc=np.zeros(D_SAE + 1, np.float32)), ValueError, "b_enc"),
    (dict(W_dec=np.zeros((D_SAE, D_IN + 1), np.float32)), ValueError, "W_dec"),
    (dict(b_dec=np.zeros(D_IN + 1, np.float32)), ValueError, "b_dec"),
    (dict(threshold=None), ValueError, "threshold"),
    (dict(threshold=np.full(D_SAE, -1.0, np.float32)), ValueError, "threshold"),
    (dict(threshold=np.full(D_SAE, np.nan, np.float32)), ValueError, "threshold"),
    (dict(threshold=np.zeros(D_SAE - 1, np.float32)), ValueError, "threshold"),
    (dict(architecture="gelu"), ValueError, "architecture"),
    (dict(architecture="topk", k=None, threshold=None), ValueError, r"\bk\b"),
    (dict(architecture="topk", k=0, threshold=None), ValueError, r"\bk\b"),
    (dict(architecture="topk", k=D_SAE + 1, threshold=None), ValueError, r"\bk\b"),
]


@pytest.mark.parametrize("overrides,error,match", SAE_CASES)
def test_sae_rejects_bad_weights(overrides, error, match):
    with pytest.raises(error, match=match):
        make_sae(**overrides)


def test_encode_rejects_bad_x():
    sae = make_sae()
    with pytest.raises(ValueError, match="d_in"):
        sae.encode(np.zeros((2, D_IN + 1), np.float32))
    with pytest.raises(TypeError, match=r"\bx\b"):
        sae.encode(np.zeros((2, D_IN), np.int64))
    for bad in (np.nan, np.inf):
        x = np.zeros((2, D_IN), np.float32)
        x[1, 2] = bad
        with pytest.raises(ValueError, match=r"\bx\b"):
            sae.encode(x)
    with pytest.raises(ValueError, match=r"\bx\b"):
        sae.encode(np.float32(1.0))


def test_encode_pooled_rejects_bad_input():
    sae = make_sae()
    x = np.zeros((2, 3, D_IN), np.float32)
    with pytest.raises(ValueError, match=r"\bx\b"):
        sae.encode_pooled(x[0], np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="mask"):
        sae.encode_pooled(x, np.ones((2, 4), bool))
    with pytest.raises(TypeError, match="mask"):
        sae.encode_pooled(x, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="mode"):
        sae.encode_pooled(x, np.ones((2, 3), bool), mode="median")
    with pytest.raises(ValueError, match="empty"):
        sae.encode_pooled(np.zeros((0, 3, D_IN), np.float32), np.ones((0, 3), bool))
    with pytest.raises(ValueError, match="d_in"):
        sae.encode_pooled(np.zeros((2, 3, D_IN - 1), np.float32), np.ones((2, 3), bool))


def test_pooler_rejects_bad_input():
    sae = make_sae()
    with pytest.raises(ValueError, match="n_seq"):
        corrsteer.core.Pooler(sae, 0)
    with pytest.raises(ValueError, match="mode"):
        corrsteer.core.Pooler(sae, 2, mode="sum")
    with pytest.raises(ValueError, match="buffer_rows"):
        corrsteer.core.Pooler(sae, 2, buffer_rows=0)
    pooler = corrsteer.core.Pooler(sae, 2)
    with pytest.raises(ValueError, match=r"\bx\b|n_seq"):
        pooler.push(np.zeros((3, D_IN), np.float32), np.ones(3, bool))
    with pytest.raises(ValueError, match="d_in"):
        pooler.push(np.zeros((2, D_IN + 2), np.float32), np.ones(2, bool))
    with pytest.raises(ValueError, match="active"):
        pooler.push(np.zeros((2, D_IN), np.float32), np.ones(3, bool))
    with pytest.raises(TypeError, match=r"\bx\b"):
        pooler.push(np.zeros((2, D_IN), np.int32), np.ones(2, bool))
    with pytest.raises(ValueError, match="seq"):
        pooler.push_rows(np.zeros((2, D_IN), np.float32), np.array([0, 2]))
    with pytest.raises(ValueError, match="seq"):
        pooler.push_rows(np.zeros((2, D_IN), np.float32), np.array([-2, 0]))
    with pytest.raises(TypeError, match="seq"):
        pooler.push_rows(np.zeros((2, D_IN), np.float32), np.array([0.0, 1.0]))
    x = np.zeros((2, D_IN), np.float32)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"\bx\b"):
        pooler.push(x, np.ones(2, bool))
    assert pooler.counts.tolist() == [0, 0]  # nothing half-applied


def fresh_acc(kind="binary"):
    acc = CorrelationAccumulator(D_SAE, kind=kind)
    acc.update(np.ones((2, D_SAE), np.float32), np.array([0.0, 1.0]))
    return acc


Z = np.ones((3, D_SAE), np.float32)
UPDATE_CASES = [
    ("binary", Z.astype(np.int32), np.array([0, 1, 0]), TypeError, r"\bz\b"),
    ("binary", Z[:, :-1], np.array([0, 1, 0]), ValueError, "d_sae"),
    ("binary", Z[0], np.array([0]), ValueError, r"\bz\b"),
    ("binary", Z, np.array([0, 1]), ValueError, r"\by\b"),
    ("binary", Z, np.array([0, np.nan, 1]), ValueError, r"\by\b"),
    ("binary", Z, np.array([0, np.inf, 1]), ValueError, r"\by\b"),
    ("binary", Z, np.array([0, 2, 1]), ValueError, r"\by\b"),
    ("binary", Z, np.array([0, 0.5, 1]), ValueError, r"\by\b"),
    ("pearson", Z, np.array([0, 1.5, 1]), ValueError, r"\by\b"),
    ("pearson", Z, np.array([0, -0.1, 1]), ValueError, r"\by\b"),
    ("binary", Z[:0], np.array([]), ValueError, "empty"),
    ("binary", np.full((3, D_SAE), np.nan, np.float32), np.array([0, 1, 0]), ValueError, r"\bz\b"),
]


@pytest.mark.parametrize("kind,z,y,error,match", UPDATE_CASES)
def test_update_rejects_bad_batches_and_leaves_state_unchanged(kind, z, y, error, match):
    acc = fresh_acc(kind)
    before = acc.to_bytes()
    with pytest.raises(error, match=match):
        acc.update(z, y)
    assert acc.to_bytes() == before


def test_accumulator_constructor_merge_and_top_reject_bad_arguments():
    for d_sae in (0, -3):
        with pytest.raises(ValueError, match="d_sae"):
            CorrelationAccumulator(d_sae)
    with pytest.raises(ValueError, match="kind"):
        CorrelationAccumulator(4, kind="spearman")
    acc = fresh_acc()
    with pytest.raises(ValueError, match="d_sae"):
        acc.merge(CorrelationAccumulator(D_SAE + 1))
    with pytest.raises(ValueError, match="kind"):
        acc.merge(CorrelationAccumulator(D_SAE, kind="pearson"))
    with pytest.raises(TypeError, match="other|CorrelationAccumulator"):
        acc.merge(np.zeros(D_SAE))
    acc.update(np.eye(2, D_SAE, dtype=np.float32), np.array([1, 0]))
    for k in (0, -1, D_SAE + 1):
        with pytest.raises(ValueError, match=r"\bk\b"):
            acc.top(k)
    with pytest.raises(ValueError, match="sign"):
        acc.top(1, sign="both")


CORRUPTIONS = [
    ("truncated", lambda b: b[: len(b) // 2], "truncated"),
    ("empty", lambda b: b"", "truncated"),
    ("trailing", lambda b: b + b"\0", "trailing"),
    ("magic", lambda b: b"XXXXXXXX" + b[8:], "magic"),
    ("version", lambda b: b[:8] + bytes([b[8] ^ 0x7F]) + b[9:], "version"),
    ("payload", lambda b: b[:-20] + bytes([b[-20] ^ 1]) + b[-19:], "checksum"),
]


@pytest.mark.parametrize("name,corrupt,match", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_from_bytes_rejects_corrupt_data(name, corrupt, match, tmp_path):
    """A corrupt checkpoint is both a ValueError and the package's CorrsteerError."""
    data = fresh_acc().to_bytes()
    with pytest.raises(ValueError, match=match) as info:
        CorrelationAccumulator.from_bytes(corrupt(data))
    assert isinstance(info.value, corrsteer.CorrsteerError)
    (tmp_path / "bad.acc").write_bytes(corrupt(data))
    with pytest.raises(ValueError, match=match):
        CorrelationAccumulator.load(tmp_path / "bad.acc")


def test_from_bytes_rejects_non_bytes_and_load_missing_file(tmp_path):
    with pytest.raises(TypeError):
        CorrelationAccumulator.from_bytes("not bytes")
    with pytest.raises(FileNotFoundError):
        CorrelationAccumulator.load(tmp_path / "missing.acc")


def test_steering_rejects_bad_input():
    W_dec = np.ones((D_SAE, D_IN), np.float32)
    cases = [
        ((W_dec, np.array([-1]), np.array([1.0])), ValueError, "features"),
        ((W_dec, np.array([D_SAE]), np.array([1.0])), ValueError, "features"),
        ((W_dec, np.array([0.0]), np.array([1.0])), TypeError, "features"),
        ((W_dec, np.array([0, 1]), np.array([1.0])), ValueError, "coefficients"),
        ((W_dec, np.array([0]), np.array([np.nan])), ValueError, "coefficients"),
        ((W_dec.astype(np.int32), np.array([0]), np.array([1.0])), TypeError, "W_dec"),
        ((W_dec[0], np.array([0]), np.array([1.0])), ValueError, "W_dec"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            corrsteer.core.steering_vector(*args)
    x = np.zeros((2, D_IN), np.float32)
    with pytest.raises(TypeError, match=r"\bx\b"):
        kernels.add_to_rows(x.astype(np.float64), np.ones(D_IN))
    with pytest.raises(TypeError, match=r"\bx\b"):
        kernels.add_to_rows(np.zeros((D_IN, 2), np.float32).T, np.ones(D_IN))
    with pytest.raises(ValueError, match=r"\bv\b"):
        kernels.add_to_rows(x, np.ones(D_IN + 1))
    with pytest.raises(ValueError, match="mask"):
        kernels.add_to_rows(x, np.ones(D_IN), np.ones(3, bool))


def test_float32_contiguous_passes_without_copy_and_other_layouts_convert():
    x = np.random.default_rng(1).standard_normal((4, D_IN)).astype(np.float32)
    assert kernels.as_float32("x", x) is x  # the hook every kernel wrapper goes through
    assert kernels.as_float32("x", x.astype(np.float64)) is not x
    sae = make_sae("relu")
    expect = sae.encode(x)
    wide = np.zeros((4, 2 * D_IN), np.float32)
    wide[:, ::2] = x
    np.testing.assert_array_equal(sae.encode(x.astype(np.float64)), expect)
    np.testing.assert_array_equal(sae.encode(wide[:, ::2]), expect)
    np.testing.assert_array_equal(sae.encode(np.asfortranarray(x)), expect)
    acc_a, acc_b = CorrelationAccumulator(D_IN), CorrelationAccumulator(D_IN)
    y = np.array([0, 1, 1, 0])
    acc_a.update(x, y)
    acc_b.update(wide[:, ::2].astype(np.float64), y.astype(np.float32))
    assert acc_a.to_bytes() == acc_b.to_bytes()
