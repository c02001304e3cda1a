"""Memory: the accumulator and the pooler stay flat in the number of samples / tokens,
and the C wrappers leak no references.

RSS is noisy (allocator arenas, page reuse), so each RSS check compares the growth
over a long run with the growth over a short one and allows 2 MiB of slack; the
checked quantity would grow by tens of MiB if any per-sample state were kept.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

import numpy as np
import psutil

import corrsteer
from corrsteer.core import CorrelationAccumulator, kernels

SLACK = 2 * 2**20


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def feed(acc, z, y, n_samples):
    for _ in range(n_samples // len(z)):
        acc.update(z, y)


def test_accumulator_memory_is_flat_from_1e3_to_1e5_samples():
    d_sae, batch = 4096, 500
    rng = np.random.default_rng(0)
    z = np.maximum(rng.standard_normal((batch, d_sae)), 0).astype(np.float32)
    y = (rng.random(batch) < 0.5).astype(np.float64)
    small, large = CorrelationAccumulator(d_sae), CorrelationAccumulator(d_sae)
    feed(small, z, y, 1000)
    feed(large, z, y, 1000)  # warm up allocator pools before measuring
    start = rss()
    tracemalloc.start()
    traced_start = tracemalloc.get_traced_memory()[0]
    feed(large, z, y, 99_000)
    traced_growth = tracemalloc.get_traced_memory()[0] - traced_start
    tracemalloc.stop()
    growth = rss() - start
    assert large.n == 100_000 and small.n == 1000
    assert len(large.to_bytes()) == len(small.to_bytes())
    assert large.nbytes == small.nbytes < 8 * 8 * d_sae + 4096
    # float64 state: (n, n_pos, ...) scalars + a handful of d_sae arrays; nothing per sample.
    assert len(large.to_bytes()) < 16 * 8 * d_sae
    assert traced_growth < 64 * 1024, traced_growth
    assert growth < SLACK, f"RSS grew {growth / 2**20:.1f} MiB over 99k samples"


def test_pooler_memory_is_flat_in_generated_tokens():
    d_in, d_sae, n_seq = 64, 1024, 4
    rng = np.random.default_rng(1)
    sae = corrsteer.SAE(rng.standard_normal((d_in, d_sae)).astype(np.float32),
                        np.zeros(d_sae, np.float32), np.zeros((d_sae, d_in), np.float32),
                        np.zeros(d_in, np.float32), architecture="relu")
    x = rng.standard_normal((n_seq, d_in)).astype(np.float32)
    active = np.ones(n_seq, bool)
    pooler = corrsteer.core.Pooler(sae, n_seq, buffer_rows=64)
    for _ in range(200):
        pooler.push(x, active)
    pooler.result()
    nbytes = pooler.nbytes
    start = rss()
    for _ in range(2000):  # keeping 4 KiB per sequence per step would grow RSS by 32 MiB
        pooler.push(x, active)
    pooler.result()
    growth = rss() - start
    assert pooler.counts.tolist() == [2200] * n_seq
    assert pooler.nbytes == nbytes
    assert growth < SLACK, f"RSS grew {growth / 2**20:.1f} MiB over 2000 steps"


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
    acc = CorrelationAccumulator(d_sae)
    pooler = corrsteer.core.Pooler(sae, 3, buffer_rows=4)
    data = acc.to_bytes()
    watched = (x, mask, z, y, features, coefficients, rows, seq, W_dec, data, sae.W_enc)

    def calls():
        sae.encode(rows)
        sae.encode_pooled(x, mask)
        kernels.sae_pool_rows(sae, rows, seq, 3)
        acc.update(z, y)
        acc.correlation()
        acc.top(3)
        CorrelationAccumulator.from_bytes(data)
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
