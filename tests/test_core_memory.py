"""Memory, measured: the accumulator and the pooler hold O(d_sae) state whatever the
number of samples or generated tokens, their C calls free every temporary, and the C
wrappers leak no references.

What is measured, not taken from a formula:
- the C heap: glibc's mallinfo2() counts every byte the C core has malloc'ed and not
  freed (NumPy's array data too; Python's own small objects live in pymalloc arenas
  outside it). Feeding a million samples or 80 000 generation steps must leave it
  where it was, to within 64 KiB: state that grew by even one byte per sample, or a
  temporary that one call in a thousand forgot to free, shows up there. Where
  mallinfo2 is missing (not glibc) these checks skip and only the RSS ones run.
- the reported nbytes against the heap the object really took when it was built.
- RSS, which is noisy (allocator arenas, page reuse), with 2 MiB of slack: the
  checked runs would grow it by tens of MiB if anything per-sample were kept.
"""

from __future__ import annotations

import ctypes
import gc
import sys

import numpy as np
import psutil
import pytest

import corrsteer
from corrsteer.core import CorrelationAccumulator, kernels
from corrsteer.core.kernels import _core

SLACK = 2 * 2**20
HEAP_SLACK = 64 * 2**10


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2():
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2
    return fn


_MALLINFO2 = _mallinfo2()
needs_mallinfo2 = pytest.mark.skipif(_MALLINFO2 is None, reason="needs glibc's mallinfo2()")


def heap() -> int:
    """Bytes malloc'ed and not yet freed, in every arena and in mmap'ed blocks."""
    gc.collect()
    info = _MALLINFO2()
    return info.uordblks + info.hblkhd


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def relu_sae(seed: int, d_in: int, d_sae: int):
    rng = np.random.default_rng(seed)
    return corrsteer.SAE(rng.standard_normal((d_in, d_sae)).astype(np.float32),
                         np.zeros(d_sae, np.float32), np.zeros((d_sae, d_in), np.float32),
                         np.zeros(d_in, np.float32), architecture="relu")


@needs_mallinfo2
@pytest.mark.parametrize("d_sae", [64, 4096])
@pytest.mark.parametrize("kind", ["binary", "pearson"])
def test_accumulator_nbytes_is_the_heap_it_takes(d_sae, kind):
    kind_id = ("binary", "pearson").index(kind)
    _core.Accumulator(d_sae, kind_id)  # warm-up: a first use may allocate lazily elsewhere
    before = heap()
    acc = _core.Accumulator(d_sae, kind_id)
    taken = heap() - before
    assert acc.nbytes <= taken <= acc.nbytes + 1024, (taken, acc.nbytes)
    del acc
    assert heap() - before < 1024  # and all of it comes back


@needs_mallinfo2
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_pooler_nbytes_is_the_heap_it_takes(mode):
    args = kernels.sae_args(relu_sae(0, 64, 1024))
    mode_id = kernels.POOL_CODES[mode]
    _core.Pooler(args, 4, mode_id, 64)  # warm-up: a first use may allocate lazily elsewhere
    before = heap()
    pooler = _core.Pooler(args, 4, mode_id, 64)
    taken = heap() - before
    assert abs(taken - pooler.nbytes) <= 2048, (taken, pooler.nbytes)
    del pooler
    assert heap() - before < 1024


@needs_mallinfo2
@pytest.mark.parametrize("kind", ["binary", "pearson"])
def test_accumulator_heap_is_flat_over_a_million_samples(kind):
    d_sae, batch = 256, 1000
    rng = np.random.default_rng(0)
    z = np.maximum(rng.standard_normal((batch, d_sae)), 0).astype(np.float32)
    y = (rng.random(batch) < 0.5).astype(np.float64) if kind == "binary" else rng.random(batch)
    acc = CorrelationAccumulator(d_sae, kind=kind)
    acc.update(z, y)  # warm up allocator pools
    size, nbytes = len(acc.to_bytes()), acc.nbytes
    start_heap, start_rss = heap(), rss()
    for _ in range(1000):  # 1e6 samples; each update allocates and frees its work buffers
        acc.update(z, y)
    growth, rss_growth = heap() - start_heap, rss() - start_rss
    assert acc.n == 1001 * batch
    assert growth < HEAP_SLACK, f"C heap grew {growth} bytes over 1e6 samples"
    assert rss_growth < SLACK, f"RSS grew {rss_growth / 2**20:.1f} MiB over 1e6 samples"
    assert acc.nbytes == nbytes and len(acc.to_bytes()) == size


@needs_mallinfo2
def test_accumulator_merge_and_io_free_what_they_allocate():
    rng = np.random.default_rng(3)
    z = rng.random((50, 512), dtype=np.float32)
    y = (rng.random(50) < 0.5).astype(np.float64)
    acc, other = CorrelationAccumulator(512), CorrelationAccumulator(512)
    acc.update(z, y)
    other.update(z, y)
    data = acc.to_bytes()
    for _ in range(20):  # warm-up
        acc.merge(other)
        acc.merge(acc)
        CorrelationAccumulator.from_bytes(data)
        acc.moments()
        acc.top(10)
        acc.reset()
    start = heap()
    for _ in range(500):
        acc.update(z, y)
        acc.merge(other)
        acc.merge(acc)  # merging with itself copies the state first
        CorrelationAccumulator.from_bytes(data)
        acc.to_bytes()
        acc.moments()
        acc.top(10)
        acc.reset()
    assert heap() - start < HEAP_SLACK


@needs_mallinfo2
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_pooler_heap_is_flat_in_generated_tokens(mode):
    d_in, d_sae, n_seq = 64, 1024, 4
    sae = relu_sae(1, d_in, d_sae)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n_seq, d_in)).astype(np.float32)
    active = np.ones(n_seq, bool)
    pooler = corrsteer.core.Pooler(sae, n_seq, mode=mode, buffer_rows=64)
    for _ in range(200):
        pooler.push(x, active)
    pooler.result()
    nbytes = pooler.nbytes
    start_heap, start_rss = heap(), rss()
    for _ in range(20_000):  # 80 000 rows: keeping 256 bytes per row would be 20 MiB
        pooler.push(x, active)
    pooler.result()
    growth, rss_growth = heap() - start_heap, rss() - start_rss
    assert pooler.counts.tolist() == [20_200] * n_seq
    assert growth < HEAP_SLACK, f"C heap grew {growth} bytes over 20 000 steps"
    assert rss_growth < SLACK, f"RSS grew {rss_growth / 2**20:.1f} MiB over 20 000 steps"
    assert pooler.nbytes == nbytes


@needs_mallinfo2
@pytest.mark.parametrize("architecture", ["relu", "topk"])
def test_encode_and_pooling_calls_free_their_temporaries(architecture):
    rng = np.random.default_rng(4)
    d_in, d_sae = 32, 600
    sae = corrsteer.SAE(rng.standard_normal((d_in, d_sae)).astype(np.float32),
                        np.zeros(d_sae, np.float32), rng.standard_normal((d_sae, d_in)).astype(np.float32),
                        rng.standard_normal(d_in).astype(np.float32), architecture=architecture,
                        k=8 if architecture == "topk" else None, apply_b_dec_to_input=True)
    x = rng.standard_normal((3, 40, d_in)).astype(np.float32)
    rows, seq = x.reshape(-1, d_in), np.repeat(np.arange(3), 40)

    def calls():
        sae.encode(rows)       # > CS_SMALL_ROWS rows: BLAS
        sae.encode(rows[:5])   # the streaming small-row kernel
        for mode in ("max", "mean"):
            sae.encode_pooled(x, mode=mode)
            kernels.sae_pool_rows(sae, rows, seq, 3, mode=mode)
        corrsteer.core.steering_vector(sae.W_dec, np.array([1, 5]), np.array([0.5, 2.0]))

    for _ in range(10):
        calls()
    start = heap()
    for _ in range(300):
        calls()
    assert heap() - start < HEAP_SLACK


def test_accumulator_rss_is_flat_from_1e3_to_1e5_samples():
    d_sae, batch = 4096, 500
    rng = np.random.default_rng(0)
    z = np.maximum(rng.standard_normal((batch, d_sae)), 0).astype(np.float32)
    y = (rng.random(batch) < 0.5).astype(np.float64)
    small, large = CorrelationAccumulator(d_sae), CorrelationAccumulator(d_sae)
    for _ in range(2):
        small.update(z, y)
        large.update(z, y)  # warm up allocator pools before measuring
    start = rss()
    for _ in range(196):
        large.update(z, y)
    growth = rss() - start
    assert large.n == 99_000 and small.n == 1000
    assert len(large.to_bytes()) == len(small.to_bytes()) and large.nbytes == small.nbytes
    assert growth < SLACK, f"RSS grew {growth / 2**20:.1f} MiB over 98k samples"


def refcounts(*objs):
    return [sys.getrefcount(o) for o in objs]


def test_no_reference_leaks_over_repeated_calls():
    rng = np.random.default_rng(2)
    d_in, d_sae = 8, 64
    W_enc = rng.standard_normal((d_in, d_sae)).astype(np.float32)
    W_dec = rng.standard_normal((d_sae, d_in)).astype(np.float32)
    sae = corrsteer.SAE(W_enc, np.zeros(d_sae, np.float32), W_dec, np.zeros(d_in, np.float32),
                        architecture="topk", k=4)
    x = rng.standard_normal((3, 5, d_in)).astype(np.float32)
    mask = np.ones((3, 5), bool)
    z = np.abs(rng.standard_normal((6, d_sae))).astype(np.float32)
    y = np.array([0, 1, 0, 1, 1, 0], np.float64)
    features, coefficients = np.array([1, 2]), np.array([0.5, -1.0])
    rows, seq = x.reshape(-1, d_in), np.repeat(np.arange(3), 5)
    seq_u8 = seq.astype(np.uint8)
    acc = CorrelationAccumulator(d_sae)
    pooler = corrsteer.core.Pooler(sae, 3, buffer_rows=4)
    data = acc.to_bytes()
    watched = (x, mask, z, y, features, coefficients, rows, seq, seq_u8, W_dec, data, sae.W_enc)

    def calls():
        sae.encode(rows)
        sae.encode_pooled(x, mask)
        kernels.sae_pool_rows(sae, rows, seq, 3)
        _core.sae_pool_rows(kernels.sae_args(sae), rows, seq_u8, 3, 0)
        acc.update(z, y)
        acc.correlation()
        acc.top(3)
        acc._acc.moments()
        CorrelationAccumulator.from_bytes(data)
        try:
            _core.Accumulator.from_bytes(data[:-1])
        except _core.FormatError:
            pass
        pooler.push_rows(rows, seq)
        pooler.result()
        corrsteer.core.steering_vector(W_dec, features, coefficients)
        kernels.add_to_rows(rows, W_dec[0])

    for _ in range(50):
        calls()
    gc.collect()
    before_refs, before_objects = refcounts(*watched), len(gc.get_objects())
    for _ in range(1000):
        calls()
    gc.collect()
    assert refcounts(*watched) == before_refs
    assert len(gc.get_objects()) - before_objects < 50
