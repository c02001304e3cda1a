"""Target: the C kernels through the binding, on shapes, dtypes and values the bytes choose.

``sae_encode`` (each architecture), ``sae_encode_pooled``, ``sae_pool_rows`` with sequence
indices in any integer dtype (uint64 2**64 - 1 included), the streaming ``Pooler``, the
accumulator's ``update`` and ``steering_vector``. Expected: ``ValueError`` or ``TypeError``
for what the documented checks refuse. What is accepted must equal the pure-NumPy reference
(``corrsteer.core.reference``) to float32 rounding, and an updated accumulator must save and
load back to the same bytes.
"""

from __future__ import annotations

import numpy as np
from harness import Reader, instrumented, main

with instrumented():
    import corrsteer
    from corrsteer.core import CorrelationAccumulator, kernels, reference

ARCHS = ("relu", "jumprelu", "topk")
INT_DTYPES = (np.int64, np.int32, np.int8, np.uint8, np.uint64, np.uint32, np.int16)


def _same(r: Reader, got: np.ndarray, want: np.ndarray) -> None:
    """On tame inputs (multiples of 1/32, so every sum is exact) the kernel equals the reference."""
    if not r.wild:
        np.testing.assert_array_equal(got, want)


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    arch, d_in, d_sae = ARCHS[r.int(0, 2)], r.int(1, 6), r.int(1, 9)
    k = r.int(1, d_sae) if arch == "topk" else None
    W_enc = np.array(r.floats(d_in * d_sae), np.float32).reshape(d_in, d_sae)
    b_enc = np.array(r.floats(d_sae), np.float32)
    b_dec = np.array(r.floats(d_in), np.float32)
    threshold = np.abs(np.array(r.floats(d_sae), np.float32)) if arch == "jumprelu" else None
    try:
        sae = corrsteer.SAE(W_enc, b_enc, W_enc.T.copy(), b_dec, threshold, architecture=arch, k=k,
                            apply_b_dec_to_input=bool(r.int(0, 1)))
    except (ValueError, TypeError):
        return
    n_rows, n_seq = r.int(1, 5), r.int(1, 3)
    x = np.array(r.floats(n_rows * d_in), np.float32).reshape(n_rows, d_in)
    dtype = INT_DTYPES[r.int(0, len(INT_DTYPES) - 1)]
    info = np.iinfo(dtype)
    seq_raw = [r.int(-1, n_seq) if r.int(0, 5) else (info.max if r.int(0, 1) else info.min) for _ in range(n_rows)]
    seq = np.array([s % (int(info.max) + 1) if s < 0 and info.min == 0 else s for s in seq_raw], dtype=dtype)
    mode = ("max", "mean")[r.int(0, 1)]
    try:
        f = sae.encode(x)
    except ValueError as exc:
        assert not np.all(np.isfinite(x - (b_dec if sae.apply_b_dec_to_input else 0))), ("finite x refused", exc)
        return
    _same(r, f, reference.sae_encode(sae, x))
    try:
        pooled, counts = kernels.sae_pool_rows(sae, x, seq, n_seq, mode)
    except ValueError:
        assert any(int(s) < -1 or int(s) >= n_seq for s in seq), ("valid seq refused", seq)
    else:
        assert all(-1 <= int(s) < n_seq for s in seq), ("out-of-range seq accepted", seq, dtype)
        want, want_counts = reference.sae_pool_rows(sae, x, seq.astype(np.int64), n_seq, mode)
        _same(r, pooled, want)
        np.testing.assert_array_equal(counts, want_counts)
        pooler = corrsteer.core.Pooler(sae, n_seq, mode=mode, buffer_rows=r.int(1, 4))
        pooler.push_rows(x, seq)
        _same(r, pooler.result(), pooled)
    y = np.array([r.int(0, 1) for _ in range(n_rows)], np.float64)
    acc = CorrelationAccumulator(d_sae)
    if not np.all(np.isfinite(f)):  # finite x can overflow float32 in x @ W_enc: refused, never folded in
        try:
            acc.update(f, y)
        except ValueError:
            assert acc.n == 0
            return
        raise AssertionError("update accepted a non-finite z")
    else:
        acc.update(f, y)
        again = CorrelationAccumulator.from_bytes(acc.to_bytes())
        assert again.to_bytes() == acc.to_bytes()
        corr = acc.correlation()
        assert np.all(np.isfinite(corr)) and np.all(np.abs(corr) <= 1 + 1e-9)
    feats = np.array([r.int(0, d_sae) for _ in range(r.int(0, 3))], np.int64)
    coefs = np.array(r.floats(len(feats)), np.float64)
    try:
        v = kernels.steering_vector(sae.W_dec, feats, coefs)
    except ValueError:
        assert np.any(feats >= d_sae) or not np.all(np.isfinite(coefs)), (feats, coefs)
        return
    _same(r, v, reference.steering_vector(sae.W_dec, feats, coefs))


if __name__ == "__main__":
    main(TestOneInput)
