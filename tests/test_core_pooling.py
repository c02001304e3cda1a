"""corrsteer.core.Pooler (C core, buffered streaming) against encode_pooled and the twin.

Pushing rows step by step, with active masks that change between steps and buffers
that flush at odd sizes, must give what encoding and pooling the whole tensor gives.
Dyadic data (exact in float32, see test_core_sae.py) makes max pooling bit-exact;
mean pooling rounds once in the division, hence rtol 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

import corrsteer
from corrsteer.core import kernels, reference


def make_sae(seed, d_in, d_sae, architecture="jumprelu", k=None):
    rng = np.random.default_rng(seed)

    def draw(shape, scale):
        return (rng.integers(-4, 5, shape) / scale).astype(np.float32)

    threshold = (rng.integers(0, 5, d_sae) / 8).astype(np.float32) if architecture == "jumprelu" else None
    return corrsteer.SAE(draw((d_in, d_sae), 8), draw(d_sae, 8), draw((d_sae, d_in), 8), draw(d_in, 4),
                         threshold=threshold, architecture=architecture, k=k,
                         apply_b_dec_to_input=seed % 2 == 1)


def steps(seed, n_seq, n_tok, d_in):
    """Residual rows per step and an active mask where sequences stop at different steps."""
    rng = np.random.default_rng(seed + 7)
    x = (rng.integers(-4, 5, (n_seq, n_tok, d_in)) / 4).astype(np.float32)
    stop = rng.integers(0, n_tok + 1, n_seq)  # sequence i is active for steps t < stop[i]
    mask = np.arange(n_tok)[None, :] < stop[:, None]
    mask &= rng.random((n_seq, n_tok)) < 0.9  # and sometimes skips a step
    return x, mask


def assert_pooled_equal(z, expect, mode, where):
    if mode == "max":
        np.testing.assert_array_equal(z, expect, err_msg=where)
    else:
        np.testing.assert_allclose(z, expect, rtol=1e-6, atol=1e-7, err_msg=where)


@pytest.mark.parametrize("buffer_rows", [1, 3, 7, 256])
@pytest.mark.parametrize("n_seq,n_tok,d_in,d_sae", [(1, 1, 8, 37), (5, 23, 12, 1031), (3, 40, 6, 4099)])
@pytest.mark.parametrize("mode", ["max", "mean"])
@pytest.mark.parametrize("architecture,k", [("jumprelu", None), ("topk", 3)])
def test_pooler_push_equals_encode_pooled(buffer_rows, n_seq, n_tok, d_in, d_sae, mode, architecture, k):
    seed = buffer_rows + n_tok
    sae = make_sae(seed, d_in, d_sae, architecture, k)
    x, mask = steps(seed, n_seq, n_tok, d_in)
    where = f"buffer_rows={buffer_rows} shape={(n_seq, n_tok, d_in, d_sae)} mode={mode} arch={architecture}"
    pooler = corrsteer.core.Pooler(sae, n_seq, mode=mode, buffer_rows=buffer_rows)
    twin = reference.Pooler(sae, n_seq, mode=mode)
    for t in range(n_tok):
        pooler.push(x[:, t], mask[:, t])
        twin.push(x[:, t], mask[:, t])
    assert pooler.counts.tolist() == mask.sum(1).tolist(), where
    z = pooler.result()
    assert z.dtype == np.float32 and z.shape == (n_seq, d_sae), where
    assert_pooled_equal(z, sae.encode_pooled(x, mask, mode=mode), mode, where)
    assert_pooled_equal(z, twin.result(), mode, where)


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_pooler_push_rows_interleaved_and_result_midway(mode):
    n_seq, n_tok, d_in, d_sae = 4, 30, 10, 513
    sae = make_sae(11, d_in, d_sae, "relu")
    x, mask = steps(11, n_seq, n_tok, d_in)
    # Rows in a scrambled order, with their sequence index (-1 for masked rows).
    seq = np.where(mask, np.arange(n_seq)[:, None], -1).reshape(-1)
    order = np.random.default_rng(0).permutation(n_seq * n_tok)
    rows, seq = x.reshape(-1, d_in)[order], seq[order]
    pooler = corrsteer.core.Pooler(sae, n_seq, mode=mode, buffer_rows=5)
    pooler.push_rows(rows[:17], seq[:17])
    midway = pooler.result()  # flushes; pushing continues afterwards
    z_mid, counts_mid = reference.sae_pool_rows(sae, rows[:17], seq[:17], n_seq, mode)
    assert_pooled_equal(midway, z_mid, mode, "midway")
    assert pooler.counts.tolist() == counts_mid.tolist()
    for start in range(17, len(rows), 13):
        pooler.push_rows(rows[start:start + 13], seq[start:start + 13])
    assert_pooled_equal(pooler.result(), sae.encode_pooled(x, mask, mode=mode), mode, "end")
    z_k, counts_k = kernels.sae_pool_rows(sae, rows, seq, n_seq, mode)
    assert_pooled_equal(z_k, pooler.result(), mode, "kernels.sae_pool_rows")
    z_twin, counts_twin = reference.sae_pool_rows(sae, rows, seq, n_seq, mode)
    assert_pooled_equal(z_k, z_twin, mode, "kernels.sae_pool_rows vs twin")
    assert counts_k.tolist() == counts_twin.tolist() == mask.sum(1).tolist()


def test_pooler_reset_and_inactive_sequences_pool_to_zero():
    sae = make_sae(12, 6, 100, "relu")
    pooler = sae.pooler(3, mode="max")
    x = np.ones((3, 6), np.float32)
    pooler.push(x, np.array([True, False, True]))
    z = pooler.result()
    assert not z[1].any() and z[0].any()
    assert pooler.counts.tolist() == [1, 0, 1]
    pooler.reset()
    assert not pooler.result().any() and pooler.counts.tolist() == [0, 0, 0]
    pooler.push(2 * x, np.array([False, True, False]))
    np.testing.assert_array_equal(pooler.result()[1], sae.encode(2 * x[1]))


def test_pooler_nothing_pushed_and_all_inactive_give_zeros():
    sae = make_sae(13, 6, 50, "jumprelu")
    for mode in ("max", "mean"):
        pooler = corrsteer.core.Pooler(sae, 2, mode=mode)
        assert not pooler.result().any()
        for _ in range(5):
            pooler.push(np.ones((2, 6), np.float32), np.zeros(2, bool))
        assert not pooler.result().any() and pooler.counts.tolist() == [0, 0]


def test_pooler_accepts_float64_and_strided_rows():
    sae = make_sae(14, 8, 64, "relu")
    x, mask = steps(14, 3, 9, 8)
    reference_pool = corrsteer.core.Pooler(sae, 3, buffer_rows=4)
    converted = corrsteer.core.Pooler(sae, 3, buffer_rows=4)
    wide = np.zeros((3, 9, 16), np.float32)
    wide[:, :, ::2] = x
    for t in range(9):
        reference_pool.push(x[:, t], mask[:, t])
        converted.push(wide[:, t, ::2] if t % 2 else x[:, t].astype(np.float64), mask[:, t])
    np.testing.assert_array_equal(converted.result(), reference_pool.result())


def test_mean_pooling_gives_the_same_bits_on_every_path():
    # Mean finalisation lives in one C function (cs_pool_finalize): z = (float)(sum * (1/count)).
    # 49 rows per sequence, where (float)(sum / 49) and (float)(sum * (1 / 49)) differ
    # now and then; sae_pool_rows used to divide in the binding, the other paths multiply.
    n_seq, n_tok, d = 8, 49, 512
    rng = np.random.default_rng(19)  # 4 elements tell the formulas apart
    eye = np.eye(d, dtype=np.float32)
    sae = corrsteer.SAE(eye, np.zeros(d, np.float32), eye, np.zeros(d, np.float32), architecture="relu")
    x = rng.random((n_seq, n_tok, d)).astype(np.float32)  # relu(x @ I) = x exactly
    sums = np.zeros((n_seq, d))
    for t in range(n_tok):  # the core's order: row after row, in double
        sums += x[:, t].astype(np.float64)
    want = (sums * (1.0 / n_tok)).astype(np.float32)
    assert (want != (sums / n_tok).astype(np.float32)).any(), "the data no longer tells the formulas apart"

    whole = kernels.sae_encode_pooled(sae, x, mode="mean")
    rows, seq = x.transpose(1, 0, 2).reshape(-1, d), np.tile(np.arange(n_seq), n_tok)
    tagged, counts = kernels.sae_pool_rows(sae, rows, seq, n_seq, mode="mean")
    pooler = corrsteer.core.Pooler(sae, n_seq, mode="mean", buffer_rows=16)
    pooler.push_rows(rows, seq)
    assert counts.tolist() == [n_tok] * n_seq
    for name, z in (("encode_pooled", whole), ("sae_pool_rows", tagged), ("Pooler", pooler.result())):
        assert z.tobytes() == want.tobytes(), f"{name}: {(z != want).sum()} elements differ"
