"""Benchmark corrsteer's C core against its peers, all measured in one run.

What it measures (median wall time of ``--repeat`` runs after one warm-up, the
candidates of each row called in turn so that drifting load hits them alike):

1. fused encode + max-pool (``SAE.encode_pooled``, JumpReLU) for Gemma-2-2B shapes
   (2304 -> 16384) and Gemma-3-270M shapes (640 -> 16384) at 8 and 512 rows
   (8 sequences x 1 or 64 tokens), against the NumPy twin, torch on the CPU doing
   the same math, and a bare float32 GEMM of the same shape into a preallocated
   output (the roofline); at 8 rows also against the memory bandwidth of reading
   W_enc once (read bandwidth measured by summing a buffer larger than L3);
2. accumulator update (batch 64 x d_sae 16384) against its NumPy twin;
3. peak memory of fused pooling against materialising every activation (n_seq 8,
   512 tokens, 640 -> 16384): tracemalloc for NumPy; for the fused path the RSS
   growth sampled during the call in a fresh subprocess, and the streaming Pooler's
   own ``nbytes`` (state + row buffer + workspace).

BLAS threads are set for corrsteer, NumPy and torch alike (threadpoolctl,
``corrsteer.core.kernels.set_num_threads``, ``torch.set_num_threads``).

Usage:
    python benchmarks/bench_core.py --threads 1
    python benchmarks/bench_core.py --quick          # smoke run, small shapes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Callable

import numpy as np

# Run from a checkout without installing: the package sits one directory up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GOALS = {"sgemm": 0.85, "torch": 1.2, "bandwidth": 0.7, "accumulator": 5.0, "memory": 1 / 8}


def set_threads(n: int) -> None:
    """Pin BLAS threads for corrsteer, NumPy (threadpoolctl) and torch to ``n``."""
    from threadpoolctl import threadpool_limits

    import corrsteer.core.kernels
    threadpool_limits(n)
    corrsteer.core.kernels.set_num_threads(n)
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    return time_interleaved({"fn": fn}, repeat)["fn"]


def time_interleaved(fns: dict[str, Callable[[], object]], repeat: int,
                     rounds: dict[str, int] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round by round.

    Interleaving makes the ratios between the functions robust to load that drifts
    during the run (a shared machine). ``rounds`` caps the rounds of slow functions.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for i in range(repeat):
        for name, fn in fns.items():
            if rounds is not None and i >= rounds.get(name, repeat):
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def make_sae(d_in: int, d_sae: int, seed: int = 0):
    import corrsteer
    rng = np.random.default_rng(seed)
    W_enc = (rng.standard_normal((d_in, d_sae), dtype=np.float32) / np.sqrt(d_in)).astype(np.float32)
    return corrsteer.SAE(W_enc, np.zeros(d_sae, np.float32), np.zeros((d_sae, d_in), np.float32),
                         np.zeros(d_in, np.float32), threshold=np.full(d_sae, 0.5, np.float32))


def bandwidth(nbytes: int, repeat: int) -> float:
    """Bytes/s *reading* a float32 buffer of ``nbytes`` once (best of a sum and a max).

    Reading W_enc once is a read-only stream, so the peer is a read-only pass; a
    copy's read+write byte rate is higher than any single read stream reaches and
    would understate the ratio.
    """
    src = np.ones(nbytes // 4, np.float32)
    return max(nbytes / timeit(lambda: src.sum(), repeat), nbytes / timeit(lambda: src.max(), repeat))


def l3_bytes() -> int:
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as fh:
            text = fh.read().strip()
        return int(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]]
    except (OSError, ValueError, KeyError):
        return 64 * 2**20


def bench_encode(d_in: int, d_sae: int, rows: int, repeat: int, bw: float) -> dict:
    import torch

    from corrsteer.core import reference
    sae = make_sae(d_in, d_sae)
    n_seq = 8
    x = np.random.default_rng(1).standard_normal((n_seq, rows // n_seq, d_in), dtype=np.float32)
    mask = np.ones(x.shape[:2], bool)
    twin_sae = reference.sae_arrays(sae)  # float64 copies made once, outside the timing
    x2d, out = x.reshape(rows, d_in), np.empty((rows, d_sae), np.float32)
    xt, Wt = torch.from_numpy(x2d), torch.from_numpy(sae.W_enc)
    bt, tt = torch.from_numpy(sae.b_enc), torch.from_numpy(sae.threshold)

    def torch_pool():
        with torch.inference_mode():
            pre = torch.addmm(bt, xt, Wt)
            return (pre * (pre > tt)).view(n_seq, rows // n_seq, d_sae).amax(dim=1)

    t = time_interleaved({
        "fused": lambda: sae.encode_pooled(x, mask, mode="max"),
        "twin": lambda: reference.sae_encode_pooled(twin_sae, x, mask, "max"),
        "torch": torch_pool,
        "sgemm": lambda: np.matmul(x2d, sae.W_enc, out=out),
    }, repeat, rounds={"twin": max(1, repeat // 3)})
    result = {"shape": f"{d_in}->{d_sae}", "rows": rows, **{f"t_{k}": v for k, v in t.items()},
              "x_twin": t["twin"] / t["fused"], "x_torch": t["torch"] / t["fused"],
              "x_sgemm": t["sgemm"] / t["fused"],
              "gflops": 2 * rows * d_in * d_sae / t["fused"] / 1e9}
    if rows <= 8:
        result["x_bandwidth"] = sae.W_enc.nbytes / t["fused"] / bw
    return result


def bench_accumulator(d_sae: int, batch: int, repeat: int) -> dict:
    import corrsteer
    from corrsteer.core import reference
    rng = np.random.default_rng(2)
    z = np.maximum(rng.standard_normal((batch, d_sae), dtype=np.float32), 0)
    y = (rng.random(batch) < 0.5).astype(np.float64)
    acc, twin = corrsteer.core.CorrelationAccumulator(d_sae), reference.CorrelationAccumulator(d_sae)
    t = time_interleaved({"c": lambda: acc.update(z, y), "twin": lambda: twin.update(z, y)}, repeat * 6)
    return {"t_c": t["c"], "t_twin": t["twin"], "x_twin": t["twin"] / t["c"]}


def memory_probe(d_in: int, d_sae: int, n_seq: int, n_tok: int) -> int:
    """In a fresh process: peak RSS growth (bytes) during one fused encode_pooled call.

    A thread samples RSS every 0.5 ms while the call runs (it releases the GIL);
    freed heap memory is returned to the OS first so that earlier temporaries do not
    hide the call's own allocations.
    """
    import ctypes
    import threading

    import psutil
    small = make_sae(8, 16)
    small.encode_pooled(np.ones((1, 2, 8), np.float32), None)  # BLAS buffers exist now
    sae = make_sae(d_in, d_sae)
    x = np.random.default_rng(1).standard_normal((n_seq, n_tok, d_in), dtype=np.float32)
    mask = np.ones((n_seq, n_tok), bool)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    proc = psutil.Process()
    base = peak = proc.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    sae.encode_pooled(x, mask, mode="max")
    done.set()
    sampler.join()
    return peak - base


def bench_memory(d_in: int, d_sae: int, n_seq: int, n_tok: int, threads: int) -> dict:
    import corrsteer
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import bench_core as b; b.set_threads({threads}); "
            f"print(b.memory_probe({d_in}, {d_sae}, {n_seq}, {n_tok}))")
    fused = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                               text=True).stdout.strip().splitlines()[-1])
    sae = make_sae(d_in, d_sae)
    pooler_bytes = corrsteer.core.Pooler(sae, n_seq, mode="max", buffer_rows=256).nbytes
    x = np.random.default_rng(1).standard_normal((n_seq, n_tok, d_in), dtype=np.float32)
    mask = np.ones((n_seq, n_tok), bool)
    tracemalloc.start()
    pre = x.reshape(-1, d_in) @ sae.W_enc + sae.b_enc          # (n_seq * n_tok, d_sae)
    f = np.where(pre > sae.threshold, pre, 0).reshape(n_seq, n_tok, d_sae)
    z = np.where(mask[:, :, None], f, 0).max(axis=1)           # (n_seq, d_sae)
    materialised = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del pre, f, z
    return {"fused": fused, "pooler": pooler_bytes, "materialised": materialised,
            "ratio": fused / materialised, "ratio_pooler": pooler_bytes / materialised}


def header(threads: int) -> list[str]:
    import corrsteer
    info = corrsteer.core.build_info()
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = "missing"
    return [
        f"corrsteer bench_core  threads={threads}  cpu={platform.processor() or platform.machine()} "
        f"cores={os.cpu_count()}",
        f"build_info: {json.dumps(info, default=str)}",
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} "
        f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}",
        f"numpy {np.__version__}  torch {torch_version}  python {platform.python_version()}",
    ]


def goal(value: float, target: float, higher: bool = True) -> str:
    ok = value >= target if higher else value <= target
    return f"{value:6.2f}x  (goal {'>=' if higher else '<='} {target:.2f}x: {'met' if ok else 'MISSED'})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for every library")
    parser.add_argument("--quick", action="store_true", help="small shapes, one repeat (smoke run)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    repeat = 1 if args.quick else args.repeat
    d_sae = 2048 if args.quick else 16384
    shapes = [(2304, d_sae), (640, d_sae)]
    for line in header(args.threads):
        print(line)
    buf = max(256 * 2**20, min(2 * l3_bytes(), 2**31)) if not args.quick else 64 * 2**20
    bw = bandwidth(buf, repeat)
    print(f"memory read bandwidth: {bw / 1e9:.1f} GB/s (buffer {buf / 2**20:.0f} MiB)\n")
    print(f"{'encode+max-pool':18s} {'rows':>5s} {'fused ms':>9s} {'twin ms':>9s} {'torch ms':>9s} "
          f"{'sgemm ms':>9s} {'GFLOP/s':>8s}  ratios")
    for d_in, d in shapes:
        for rows in (8, 512):
            r = bench_encode(d_in, d, rows, repeat, bw)
            ratios = [f"vs twin {r['x_twin']:.1f}x", f"vs torch {goal(r['x_torch'], GOALS['torch'])}"
                      if rows == 512 else f"vs torch {r['x_torch']:.2f}x",
                      f"vs sgemm {goal(r['x_sgemm'], GOALS['sgemm'])}" if rows == 512
                      else f"vs sgemm {r['x_sgemm']:.2f}x"]
            if "x_bandwidth" in r:
                ratios.append(f"W_enc read vs bandwidth {goal(r['x_bandwidth'], GOALS['bandwidth'])}")
            print(f"{r['shape']:18s} {rows:5d} {1e3 * r['t_fused']:9.2f} {1e3 * r['t_twin']:9.1f} "
                  f"{1e3 * r['t_torch']:9.2f} {1e3 * r['t_sgemm']:9.2f} {r['gflops']:8.1f}  "
                  + "; ".join(ratios))
    acc = bench_accumulator(d_sae, 64, repeat)
    print(f"\naccumulator update 64 x {d_sae}: C {1e3 * acc['t_c']:.3f} ms, twin "
          f"{1e3 * acc['t_twin']:.3f} ms -> {goal(acc['x_twin'], GOALS['accumulator'])}")
    n_tok = 64 if args.quick else 512
    mem = bench_memory(640, d_sae, 8, n_tok, args.threads)
    print(f"peak memory, n_seq 8 x {n_tok} tokens, 640->{d_sae}: materialised "
          f"{mem['materialised'] / 2**20:.1f} MiB (tracemalloc)")
    print(f"  fused encode_pooled {mem['fused'] / 2**20:.1f} MiB (sampled RSS growth) -> "
          f"{goal(mem['ratio'], GOALS['memory'], higher=False)}")
    print(f"  streaming Pooler (buffer_rows 256) {mem['pooler'] / 2**20:.1f} MiB (its nbytes) -> "
          f"{goal(mem['ratio_pooler'], GOALS['memory'], higher=False)}")


if __name__ == "__main__":
    main()
