"""Collection measured against the paper's way of collecting, and validation sequential vs batched.

1. Collection, the same model, SAEs (4 layers, d_sae 16384, random JumpReLU SAEs of the
   model's width), samples and generation length, three ways, each in a fresh process:

   - ``plain``: greedy generation alone (``corrsteer.method.generation.generate``), the floor;
   - ``paper``: the paper's way: ``model.generate(output_hidden_states=True)`` keeps every
     layer's residuals for the whole batch, the generation positions of the 4 SAE layers are
     encoded with torch, max-pooled, and running sums (n, Σz, Σz², Σzy) updated in NumPy;
   - ``corrsteer``: :func:`corrsteer.method.collection.collect` (capture pools while generating).

   Every sequence generates exactly T tokens (``min_new_tokens = T``, no stop strings),
   for T in ``--lengths``. Reported: samples/s, and the peak extra memory: the growth of
   the peak during the measured block (RSS sampled every 2 ms on the CPU;
   ``max_memory_allocated`` on CUDA) minus that of the ``plain`` run, so that the KV cache
   and logits, which all three share, are not counted. The SAE weights are not counted
   either: the paper's way reads them in place on the CPU (``torch.from_numpy``). Both ways'
   correlations are compared (max |Δr|) as a check that they computed the same thing.

2. Validation of ``pruned`` (``VALIDATION``: arithmetic, gemma-3-270m, the default SAEs,
   n_train 160, n_val 32, batch 32; the settings ``corrsteer demo`` had before it became the
   food-task controls demo): the baseline and the 2·L candidates one pass each (sequential)
   against one batched pass, timed, with the scores and completions compared.

3. ``--speed``: time alone, in one process with the model loaded once, the three ways
   called in turn ``--repeat`` times and the best of each kept, by wall time and by the
   process's CPU time (user + system, which a machine shared with other jobs inflates
   less than wall time).

Usage:
    python benchmarks/bench_pipeline.py                      # CPU, lengths 32,128,512
    python benchmarks/bench_pipeline.py --speed --repeat 3   # time only, ways interleaved
    python benchmarks/bench_pipeline.py --device cuda
    python benchmarks/bench_pipeline.py --quick              # smoke run: T=8,16, 4 samples
    python benchmarks/bench_pipeline.py --validation-only    # part 2 alone
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WAYS = ("plain", "paper", "corrsteer")
GOALS = {"speed": 1.5, "memory": 0.1}


def random_saes(d_model: int, d_sae: int, layers: tuple[int, ...], seed: int = 0) -> dict[int, Any]:
    """JumpReLU SAEs of the right shape with random weights (``W_enc`` columns of norm ~1, threshold 0.5)."""
    import corrsteer

    rng = np.random.default_rng(seed)
    out = {}
    for l in layers:
        W_enc = (rng.standard_normal((d_model, d_sae), dtype=np.float32) / np.sqrt(d_model)).astype(np.float32)
        W_dec = np.ascontiguousarray(W_enc.T)
        out[l] = corrsteer.SAE(W_enc, np.zeros(d_sae, np.float32), W_dec, np.zeros(d_model, np.float32),
                               threshold=np.full(d_sae, 0.5, np.float32), architecture="jumprelu", layer=l,
                               site="resid_post")
    return out


class Peak:
    """Peak RSS (bytes) of this process, sampled every 2 ms in a thread while the block runs."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.before = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> Peak:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def paper_way(model: Any, tok: Any, task: Any, saes: dict[int, Any], samples: list[Any], batch_size: int,
              n_new: int) -> dict[int, dict[str, Any]]:
    """Generate, keep every layer's residuals, encode with torch, max-pool, running sums in NumPy."""
    import torch

    device = next(model.parameters()).device

    def weight(a: np.ndarray) -> torch.Tensor:  # shares the SAE's memory on the CPU: no copy counted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the SAE's arrays are read-only; nothing writes them
            return torch.from_numpy(np.asarray(a)).to(device)

    w = {l: {k: weight(getattr(s, k)) for k in ("W_enc", "b_enc", "threshold")} for l, s in saes.items()}
    sums = {l: {"n": 0, "sy": 0.0, "syy": 0.0, "sz": 0.0, "szz": 0.0, "szy": 0.0} for l in saes}
    for a in range(0, len(samples), batch_size):
        batch = samples[a:a + batch_size]
        enc = tok([task.prompt(s, tok) for s in batch], return_tensors="pt", padding=True, padding_side="left")
        width = enc["input_ids"].shape[1]
        with torch.no_grad():
            out = model.generate(**{k: v.to(device) for k, v in enc.items()}, max_new_tokens=n_new,
                                 min_new_tokens=n_new, do_sample=False, output_hidden_states=True,
                                 return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(out.sequences[:, width:], skip_special_tokens=True)
            y = np.array([task.reward(s, t) for s, t in zip(batch, texts)], dtype=np.float64)
            for l in saes:
                # generation positions: the prompt's last column, then one column per decoding step
                resid = torch.cat([out.hidden_states[0][l + 1][:, -1:]] +
                                  [h[l + 1] for h in out.hidden_states[1:]], dim=1).float()  # (n_seq, T, d_model)
                pre = resid @ w[l]["W_enc"] + w[l]["b_enc"]  # (n_seq, T, d_sae)
                f = pre * (pre > w[l]["threshold"])
                z = f.amax(dim=1).cpu().numpy().astype(np.float64)  # (n_seq, d_sae)
                s = sums[l]
                s["n"] += len(y)
                s["sy"] += y.sum()
                s["syy"] += (y * y).sum()
                s["sz"] = s["sz"] + z.sum(0)
                s["szz"] = s["szz"] + (z * z).sum(0)
                s["szy"] = s["szy"] + (z * y[:, None]).sum(0)
        del out
    return sums


def paper_r(s: dict[str, Any]) -> np.ndarray:
    n = s["n"]
    cov = n * s["szy"] - s["sz"] * s["sy"]
    var = np.clip(n * s["szz"] - s["sz"] ** 2, 0, None) * (n * s["syy"] - s["sy"] ** 2)
    return np.where(var > 0, cov / np.sqrt(np.where(var > 0, var, 1)), 0.0)


def setup(args: argparse.Namespace, n_new: int) -> tuple[Any, Any, Any, dict[int, Any], list[Any]]:
    """The model, tokenizer, task (exactly ``n_new`` tokens per sequence), random SAEs and samples."""
    from corrsteer.method.generation import generate
    from corrsteer.models import d_model, load_model
    from corrsteer.sae.defaults import DEFAULT_LAYERS
    from corrsteer.tasks import get_task

    model, tok = load_model(args.model, device=args.device, dtype="float32")
    saes = random_saes(d_model(model), args.d_sae, DEFAULT_LAYERS)
    task = get_task("arithmetic")
    task.stop_strings = ()
    generate(model, tok, ["warm up"], 2)  # before min_new_tokens is set: 2 tokens
    retarget(model, task, n_new)
    return model, tok, task, saes, task.samples("train", args.n)


def retarget(model: Any, task: Any, n_new: int) -> None:
    """Every sequence generates exactly ``n_new`` tokens."""
    task.max_new_tokens = n_new
    model.generation_config.min_new_tokens = n_new


def run_way(way: str, model: Any, tok: Any, task: Any, saes: dict[int, Any], samples: list[Any], batch_size: int,
            n_new: int) -> dict[str, Any]:
    """One collection the given way: ``{"seconds", "cpu_seconds", "r"}``."""
    import torch

    from corrsteer.method.collection import collect
    from corrsteer.method.generation import generate

    result: dict[str, Any] = {}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if way == "plain":
        with torch.inference_mode():
            for a in range(0, len(samples), batch_size):
                generate(model, tok, [task.prompt(s, tok) for s in samples[a:a + batch_size]], n_new,
                         batch_size=batch_size)
    elif way == "paper":
        sums = paper_way(model, tok, task, saes, samples, batch_size, n_new)
        result["r"] = {str(l): paper_r(s).tolist() for l, s in sums.items()}
    else:
        col = collect(model, tok, task, saes, samples, batch_size=batch_size, max_new_tokens=n_new,
                      checkpoint_every=len(samples), progress=False)
        result["r"] = {str(l): a.correlation().tolist() for l, a in col.accumulators.items()}
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()
    result["seconds"] = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return result


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process: prints one JSON line."""
    import torch

    model, tok, task, saes, samples = setup(args, args.length)
    cuda = str(args.device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_gpu = torch.cuda.memory_allocated() if cuda else 0
    with Peak() as peak:
        result = run_way(args.worker, model, tok, task, saes, samples, args.batch_size, args.length)
    result.update(way=args.worker, length=args.length, peak_rss=peak.peak - peak.before,
                  peak_gpu=(torch.cuda.max_memory_allocated() - base_gpu) if cuda else None)
    print("RESULT " + json.dumps(result))


def speed(args: argparse.Namespace) -> list[str]:
    """Time alone: one process, the model loaded once, the ways called in turn ``--repeat`` times, best kept."""
    lengths = [int(x) for x in args.lengths.split(",")]
    model, tok, task, saes, samples = setup(args, lengths[0])
    lines = ["| T | best wall s plain / paper / corrsteer | speed-up vs paper, wall (goal ≥ 1.5×) | best CPU s "
             "plain / paper / corrsteer | speed-up vs paper, CPU | collection's own CPU s: paper / corrsteer |",
             "|---|---|---|---|---|---|"]
    for n_new in lengths:
        retarget(model, task, n_new)
        best: dict[str, dict[str, float]] = {w: {"seconds": float("inf"), "cpu_seconds": float("inf")} for w in WAYS}
        for _ in range(args.repeat):
            for way in WAYS:
                r = run_way(way, model, tok, task, saes, samples, args.batch_size, n_new)
                for key in ("seconds", "cpu_seconds"):
                    best[way][key] = min(best[way][key], r[key])
        w, c = ({k: best[k][key] for k in WAYS} for key in ("seconds", "cpu_seconds"))
        lines.append(f"| {n_new} | {w['plain']:.1f} / {w['paper']:.1f} / {w['corrsteer']:.1f} | "
                     f"{w['paper'] / w['corrsteer']:.2f}× | {c['plain']:.1f} / {c['paper']:.1f} / "
                     f"{c['corrsteer']:.1f} | {c['paper'] / c['corrsteer']:.2f}× | {c['paper'] - c['plain']:.1f} / "
                     f"{c['corrsteer'] - c['plain']:.1f} |")
        print(lines[-1], f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return lines


def measure(args: argparse.Namespace, way: str, n_new: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", way, "--length", str(n_new), "--n", str(args.n),
           "--batch-size", str(args.batch_size), "--device", args.device, "--model", args.model,
           "--d-sae", str(args.d_sae)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"worker {way} T={n_new} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# Part 2's settings (fixed here: ``corrsteer demo`` no longer runs pruned on arithmetic).
VALIDATION = dict(task="arithmetic", model="gemma-3-270m", sae="default", n_train=160, n_val=32, batch_size=32,
                  checkpoint_every=64)


def validation(args: argparse.Namespace) -> list[str]:
    """``VALIDATION``: pruned's baseline + candidates, one pass each vs one batched pass."""
    from corrsteer.method.collection import collect
    from corrsteer.method.evaluation import generate_conditions, generate_records, make_validator
    from corrsteer.method.selection import select
    from corrsteer.models import load_model
    from corrsteer.sae.sets import load_saes
    from corrsteer.tasks import get_task

    model, tok = load_model(VALIDATION["model"], device=args.device, dtype="float32")
    saes = load_saes(VALIDATION["sae"], model, tok, None, progress=False, train=False)  # cached, or an error
    task = get_task(VALIDATION["task"])
    bs = VALIDATION["batch_size"]
    start = time.perf_counter()
    col = collect(model, tok, task, saes, task.samples("train", VALIDATION["n_train"]), batch_size=bs,
                  checkpoint_every=VALIDATION["checkpoint_every"], progress=False)
    collect_s = time.perf_counter() - start
    probes: list[Any] = []

    def record(interventions: Any) -> float:
        raise AssertionError("select calls many()")

    record.many = lambda sets: probes.extend(sets) or [0.0] * len(sets)  # type: ignore[attr-defined]
    logging.getLogger("corrsteer.method.selection").setLevel(logging.ERROR)  # the recorder's zeros keep nothing
    select(col, saes, "pruned", validate=record)
    val = task.samples("validation", VALIDATION["n_val"])
    times, scores = {}, {}
    for batched in (False, True, False, True):  # twice each, alternating, so that drifting load hits both
        v = make_validator(model, tok, task, val, batch_size=bs, progress=False, batched=batched)
        start = time.perf_counter()
        scores[batched] = v.many(probes)
        times.setdefault(batched, []).append(time.perf_counter() - start)
    seq = [generate_records(model, tok, task, val, p, batch_size=bs, progress=False) for p in probes]
    bat = generate_conditions(model, tok, task, val, probes, batch_size=bs, progress=False)
    same = sum(a["completion"] == b["completion"] for s, b_ in zip(seq, bat) for a, b in zip(s, b_))
    total = sum(len(s) for s in seq)
    best = {k: min(v) for k, v in times.items()}
    return [f"collection ({VALIDATION['task']}, {VALIDATION['n_train']} samples): {collect_s:.1f} s",
            f"validation of pruned, {len(probes)} conditions x {len(val)} samples, batch {bs}:",
            f"  sequential (one pass per condition): {best[False]:.2f} s (runs: "
            f"{', '.join(f'{t:.2f}' for t in times[False])})",
            f"  one batched pass:                    {best[True]:.2f} s (runs: "
            f"{', '.join(f'{t:.2f}' for t in times[True])})",
            f"  speed-up {best[False] / best[True]:.2f}x; scores equal: {scores[False] == scores[True]} "
            f"({scores[True]}); completions equal: {same} of {total}"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--lengths", default="32,128,512")
    p.add_argument("--n", type=int, default=16, help="samples per measurement (16)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--quick", action="store_true", help="smoke run: lengths 8,16, 4 samples, no validation part")
    p.add_argument("--no-validation", action="store_true")
    p.add_argument("--validation-only", action="store_true", help="part 2 alone (no collection measurements)")
    p.add_argument("--speed", action="store_true", help="time only: one process, ways in turn, best of --repeat")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.lengths, args.n, args.batch_size, args.no_validation = "8,16", 4, 2, True
    if args.validation_only:
        args.lengths, args.no_validation = "", False
    import torch

    print(f"# bench_pipeline: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, device {args.device}, model {args.model}, 4 SAE layers x d_sae {args.d_sae}, "
          f"{args.n} samples, batch {args.batch_size}, load average {os.getloadavg()[0]:.1f}")
    if args.speed:
        print("\n".join(speed(args)))
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
        return
    rows = []
    gpu = str(args.device).startswith("cuda")
    for n_new in [int(x) for x in args.lengths.split(",") if x.strip()]:
        res = {way: measure(args, way, n_new) for way in WAYS}
        floor = res["plain"]["peak_gpu" if gpu else "peak_rss"]
        extra = {w: (res[w]["peak_gpu" if gpu else "peak_rss"] - floor) / 2**20 for w in ("paper", "corrsteer")}
        sps = {w: args.n / res[w]["seconds"] for w in WAYS}
        cpu = {w: res[w].get("cpu_seconds", float("nan")) / args.n for w in WAYS}
        dr = max(float(np.max(np.abs(np.asarray(res["paper"]["r"][l]) - np.asarray(res["corrsteer"]["r"][l]))))
                 for l in res["paper"]["r"])
        rows.append((n_new, sps, cpu, extra, dr))
        print(f"T={n_new}: samples/s plain {sps['plain']:.3f} paper {sps['paper']:.3f} corrsteer "
              f"{sps['corrsteer']:.3f}; CPU s/sample plain {cpu['plain']:.2f} paper {cpu['paper']:.2f} corrsteer "
              f"{cpu['corrsteer']:.2f}; extra MiB paper {extra['paper']:.1f} corrsteer {extra['corrsteer']:.1f}; "
              f"max |dr| {dr:.2e}; load {os.getloadavg()[0]:.1f}", flush=True)
    if rows:
        print()
        print_table(rows)
    if not args.no_validation:
        print()
        for line in validation(args):
            print(line)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


def print_table(rows: list[tuple[Any, ...]]) -> None:
    """Part 1's markdown table."""
    print("| T | samples/s plain / paper / corrsteer | speed-up vs paper (goal ≥ 1.5×) | CPU s per sample plain / paper "
          "/ corrsteer | extra MiB paper / corrsteer | memory ratio (goal ≤ 0.1) | max abs Δr |")
    print("|---|---|---|---|---|---|---|")
    for n_new, sps, cpu, extra, dr in rows:
        ratio = extra["corrsteer"] / extra["paper"] if extra["paper"] > 0 else float("nan")
        print(f"| {n_new} | {sps['plain']:.3f} / {sps['paper']:.3f} / {sps['corrsteer']:.3f} | "
              f"{sps['corrsteer'] / sps['paper']:.2f}× (CPU time: {cpu['paper'] / cpu['corrsteer']:.2f}×) | "
              f"{cpu['plain']:.2f} / {cpu['paper']:.2f} / {cpu['corrsteer']:.2f} | {extra['paper']:.1f} / "
              f"{extra['corrsteer']:.1f} | {ratio:.3f} | {dr:.1e} |")


if __name__ == "__main__":
    main()
