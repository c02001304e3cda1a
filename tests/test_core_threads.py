"""Thread safety of the C-backed objects: the GIL is released during C work, and an
accumulator or pooler used from a second thread meanwhile refuses the call with
RuntimeError instead of racing; it stays consistent and usable afterwards.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import corrsteer


def _run_while(work, probe, budget_s: float = 120.0) -> tuple[int, list[BaseException]]:
    """Run work() in a thread repeatedly; call probe() from this thread meanwhile.

    Whichever call comes second is refused; the work thread's refusals are expected
    too. Returns how many probes were refused with RuntimeError, and other errors.
    Stops at the first round with a refusal. On an idle machine that is the first round;
    on a loaded one the scheduler can keep this thread off the CPU for whole work() calls
    (40 and then 400 rounds were both seen to pass without an overlap under CI load), so
    the bound is wall time, not a round count.
    """
    refused, errors = 0, []
    deadline = time.monotonic() + budget_s
    while not refused and time.monotonic() < deadline:
        started = threading.Event()

        def target():
            started.set()
            try:
                work()
            except RuntimeError as exc:  # refused because the probe got in first: fine
                if "another thread" not in str(exc):
                    errors.append(exc)
            except BaseException as exc:  # reported to the main thread
                errors.append(exc)

        t = threading.Thread(target=target)
        t.start()
        started.wait()
        while t.is_alive():
            try:
                probe()
            except RuntimeError as exc:
                assert "another thread" in str(exc)
                refused += 1
        t.join()
    return refused, errors


def test_accumulator_refuses_concurrent_use_and_stays_consistent():
    rng = np.random.default_rng(0)
    d_sae, n = 2048, 3000
    z = rng.random((n, d_sae), dtype=np.float32)
    y = (rng.random(n) < 0.5).astype(np.float64)
    acc = corrsteer.core.CorrelationAccumulator(d_sae)
    done = []

    def work():
        acc.update(z, y)
        done.append(1)

    probes = []

    def probe():
        acc.update(z[:2], y[:2])
        probes.append(1)

    refused, errors = _run_while(work, probe)
    assert not errors
    assert refused > 0, "no concurrent call was ever observed; the GIL may not be released"
    assert acc.n == len(done) * n + len(probes) * 2  # every accepted update counted once
    twin = corrsteer.core.CorrelationAccumulator(d_sae)
    for _ in done:
        twin.update(z, y)
    for _ in probes:
        twin.update(z[:2], y[:2])
    assert acc.n == twin.n
    acc.correlation()  # usable afterwards


def test_merge_refuses_a_busy_partner():
    rng = np.random.default_rng(1)
    z = rng.random((3000, 2048), dtype=np.float32)
    y = (rng.random(3000) < 0.5).astype(np.float64)
    a, b = corrsteer.core.CorrelationAccumulator(2048), corrsteer.core.CorrelationAccumulator(2048)
    b.update(z[:10], y[:10])
    refused, errors = _run_while(lambda: a.update(z, y), lambda: b.merge(a))
    assert not errors and refused > 0


def test_pooler_refuses_concurrent_use():
    rng = np.random.default_rng(2)
    d_in, d_sae, n_seq = 256, 4096, 4
    sae = corrsteer.SAE(rng.standard_normal((d_in, d_sae)).astype(np.float32),
                        np.zeros(d_sae, np.float32), np.zeros((d_sae, d_in), np.float32),
                        np.zeros(d_in, np.float32), architecture="relu")
    pooler = corrsteer.core.Pooler(sae, n_seq, buffer_rows=64)
    rows = rng.standard_normal((512, d_in)).astype(np.float32)
    seq = np.arange(512, dtype=np.int64) % n_seq
    refused, errors = _run_while(lambda: pooler.push_rows(rows, seq), pooler.result)
    assert not errors and refused > 0
    total = pooler.counts.sum()
    assert total % 512 == 0 and total > 0


def test_gil_is_released_inside_one_long_encode():
    """Another Python thread must run *during* a single C call, not merely between calls.

    A counter thread stamps the time every few hundred loop turns. One call of
    _core.sae_encode, timed from Python right around it, must contain stamps in the
    middle half of its duration. With the GIL held in C the counter thread can only
    run before the call starts or after it returns (the interpreter switches threads
    between bytecodes, and there are none inside the call), so no stamp can fall
    there. A call too short to tell (a very fast machine) is retried on twice the
    rows; nothing here depends on how fast the machine is.
    """
    rng = np.random.default_rng(3)
    d_in, d_sae = 512, 4096
    sae = corrsteer.SAE(rng.standard_normal((d_in, d_sae)).astype(np.float32),
                        np.zeros(d_sae, np.float32), np.zeros((d_sae, d_in), np.float32),
                        np.zeros(d_in, np.float32), architecture="relu")
    args = corrsteer.core.kernels.sae_args(sae)
    stamps: list[float] = []
    stop = threading.Event()

    def count():
        i = 0
        while not stop.is_set():
            i += 1
            if i % 256 == 0:
                stamps.append(time.perf_counter())

    threads_before = corrsteer.core._core.get_num_threads()
    corrsteer.core._core.set_num_threads(1)  # leave a core for the counter thread
    t = threading.Thread(target=count, daemon=True)
    t.start()
    try:
        while not stamps:
            time.sleep(0.001)
        n_rows = 256
        for _ in range(5):  # up to 4096 rows (64 MiB out)
            x = rng.standard_normal((n_rows, d_in)).astype(np.float32)
            t0 = time.perf_counter()
            corrsteer.core._core.sae_encode(args, x)
            t1 = time.perf_counter()
            if t1 - t0 > 0.05:  # long enough to have a middle
                break
            n_rows *= 2
    finally:
        stop.set()
        t.join()
        corrsteer.core._core.set_num_threads(threads_before)
    lo, hi = t0 + 0.25 * (t1 - t0), t1 - 0.25 * (t1 - t0)
    inside = sum(lo < s < hi for s in stamps)
    assert inside > 0, (f"no stamp of the counter thread inside the middle half of one "
                        f"{(t1 - t0) * 1e3:.0f} ms sae_encode call on {n_rows} rows: "
                        "the binding holds the GIL during C work")


@pytest.mark.parametrize("kind", ["binary", "pearson"])
def test_separate_accumulators_in_threads_merge_to_the_single_thread_result(kind):
    rng = np.random.default_rng(4)
    z = rng.random((400, 64), dtype=np.float32)
    y = (rng.random(400) < 0.4).astype(np.float64)
    shards = [corrsteer.core.CorrelationAccumulator(64, kind=kind) for _ in range(4)]
    threads = [threading.Thread(target=s.update, args=(z[i::4], y[i::4])) for i, s in enumerate(shards)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = shards[0]
    for s in shards[1:]:
        total.merge(s)
    single = corrsteer.core.CorrelationAccumulator(64, kind=kind)
    single.update(z, y)
    np.testing.assert_allclose(total.correlation(), single.correlation(), rtol=0, atol=1e-12)
