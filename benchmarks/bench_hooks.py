"""Benchmark the hooks: greedy generation speed with ``steer``/``capture``, and capture's memory.

Prints a markdown table with
- tokens/s of greedy generation without hooks, with one steering vector, and with a
  vector at every layer (goal: >= 0.97x of plain with one vector);
- the per-token overhead of ``capture`` (one SAE of ``--d-sae`` features) against plain
  generation;
- the peak resident memory that generation adds, plain and with ``capture``, at 32 and
  at 512 new tokens, each measured in a fresh process (goal: capture's extra is flat).

Every timed run generates exactly ``--new-tokens`` tokens (``min_new_tokens``); runs of
the variants are interleaved and the best of ``--repeats`` is kept, both of wall time
and of the process's CPU time. On a shared machine the CPU-time columns are the ones
to read (waiting for a core does not count); with ``--threads 1`` they measure work.

Usage:
    python benchmarks/bench_hooks.py                           # gemma-3-270m if installed, else random-llama
    python benchmarks/bench_hooks.py --model random-llama --batch 4 --new-tokens 64 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import psutil
import torch

# Run from a checkout without installing: the package sits one directory up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import corrsteer  # noqa: E402
from corrsteer.hooks import capture, steer  # noqa: E402
from corrsteer.models.layers import d_model, find_layers  # noqa: E402

PROMPTS = ["The history of the printing press begins", "Water boils at a temperature that",
           "In mathematics, a prime number is", "The quick brown fox", "Photosynthesis converts light into",
           "A good recipe for bread needs", "The capital of France is", "Once upon a time, in a small village,"]


def load(name: str, device: str) -> tuple[Any, Any]:
    """The model and tokenizer: an embedded/local model by name, or ``random-llama`` (a 125M random Llama)."""
    if name == "random-llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                             num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval().to(device)
        return model, None
    from corrsteer.models import load_model

    return load_model(name, device=device)


def default_model() -> str:
    try:
        from corrsteer.models.embedded import EMBEDDED, embedded_spec, locate_parts

        locate_parts(embedded_spec("gemma-3-270m"))
        return "gemma-3-270m" if "gemma-3-270m" in EMBEDDED else "random-llama"
    except Exception:
        return "random-llama"


def inputs(tok: Any, batch: int, device: str) -> dict[str, torch.Tensor]:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    if tok is None:  # random model: fixed random token ids of the prompts' lengths, left-padded
        g = torch.Generator().manual_seed(0)
        lengths = [6 + len(p) // 6 for p in prompts]
        width = max(lengths)
        ids = torch.randint(10, 32000, (batch, width), generator=g)
        mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
        return {"input_ids": (ids * mask).to(device), "attention_mask": mask.to(device)}
    return {k: v.to(device) for k, v in tok(prompts, return_tensors="pt", padding=True, padding_side="left").items()}


def random_sae(width: int, d_sae: int, layer: int) -> Any:
    rng = np.random.default_rng(0)
    return corrsteer.SAE((rng.standard_normal((width, d_sae)) / np.sqrt(width)).astype(np.float32),
                         np.full(d_sae, -0.1, np.float32),
                         (rng.standard_normal((d_sae, width)) / np.sqrt(width)).astype(np.float32),
                         np.zeros(width, np.float32), architecture="relu", layer=layer)


def run(model: Any, enc: dict[str, torch.Tensor], n_new: int) -> tuple[float, float]:
    """Generate exactly ``n_new`` tokens; (wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, num_beams=1,
                       pad_token_id=0)
    return time.perf_counter() - wall, time.process_time() - cpu


def variants(model: Any, sae: Any, layer: int, backend: str) -> dict[str, Any]:
    """name -> a function returning a fresh context manager (or None for no hooks)."""
    width = d_model(model)
    g = torch.Generator().manual_seed(1)
    one = {layer: torch.randn(width, generator=g)}
    every = {i: torch.randn(width, generator=g) for i in range(len(find_layers(model)))}
    return {"plain": lambda: None,
            "steer, 1 layer": lambda: steer(model, one),
            f"steer, all {len(every)} layers": lambda: steer(model, every),
            f"capture, d_sae={sae.d_sae} ({backend})": lambda: capture(model, {layer: sae}, backend=backend)}


def peak_rss_during(fn: Any) -> tuple[float, float]:
    """Run ``fn`` while sampling the resident set size; (peak - start) in MiB and seconds taken."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        seconds = fn()
    finally:
        stop.set()
        thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return (peak[0] - base) / 2**20, seconds


def child_memory(args: argparse.Namespace) -> None:
    """In a fresh process: peak RSS added by one generation of ``--child-tokens`` tokens."""
    model, tok = load(args.model, args.device)
    layer = args.layer if args.layer is not None else len(find_layers(model)) // 2
    sae = random_sae(d_model(model), args.d_sae, layer)
    enc = inputs(tok, args.batch, args.device)
    ctx = capture(model, {layer: sae}, backend=args.backend) if args.child_mode == "capture" else None
    if ctx is not None:
        ctx.__enter__()
    run(model, enc, 4)  # warm up kernels and the allocator at a short length
    mib, _ = peak_rss_during(lambda: run(model, enc, args.child_tokens)[0])
    if ctx is not None:
        ctx.__exit__(None, None, None)
    print(json.dumps({"mib": mib}))


def memory_row(args: argparse.Namespace, mode: str, n_new: int) -> float:
    cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--batch", str(args.memory_batch),
           "--d-sae", str(args.d_sae), "--backend", args.backend, "--threads", str(args.threads),
           "--child-mode", mode, "--child-tokens", str(n_new)]
    if args.layer is not None:
        cmd += ["--layer", str(args.layer)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return float(json.loads(out.stdout.strip().splitlines()[-1])["mib"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="gemma-3-270m | smollm2-135m-instruct | path | random-llama")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (0: memory rows only)")
    parser.add_argument("--d-sae", type=int, default=16384)
    parser.add_argument("--layer", type=int, default=None, help="layer hooked (default: the middle one)")
    parser.add_argument("--backend", default="auto", choices=["auto", "core", "torch"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory-tokens", default="32,512", help="new-token counts of the memory rows")
    parser.add_argument("--memory-batch", type=int, default=1, help="batch size of the memory rows")
    parser.add_argument("--child-mode", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-tokens", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model = args.model or default_model()
    torch.set_num_threads(args.threads)
    if args.child_mode:
        child_memory(args)
        return
    if args.repeats > 0:
        speed_table(args)
    lengths = [int(t) for t in args.memory_tokens.split(",") if t]
    if lengths:
        print(f"\nbatch {args.memory_batch}, d_sae {args.d_sae}, each row a fresh process\n")
        print("| new tokens | peak RSS added, plain (MiB) | with capture (MiB) | capture's extra (MiB) |")
        print("|---|---|---|---|")
        for n_new in lengths:
            plain, cap = memory_row(args, "plain", n_new), memory_row(args, "capture", n_new)
            print(f"| {n_new} | {plain:.1f} | {cap:.1f} | {cap - plain:+.1f} |", flush=True)


def speed_table(args: argparse.Namespace) -> None:
    """Print the tokens/s table of every variant."""
    model, tok = load(args.model, args.device)
    layer = args.layer if args.layer is not None else len(find_layers(model)) // 2
    backend = args.backend if args.backend != "auto" else ("core" if args.device == "cpu" else "torch")
    sae = random_sae(d_model(model), args.d_sae, layer)
    enc = inputs(tok, args.batch, args.device)
    table = variants(model, sae, layer, backend)
    wall = {name: float("inf") for name in table}
    cpu = dict(wall)
    run(model, enc, 4)
    for _ in range(args.repeats):  # interleaved, so that load spikes hit every variant alike
        for name, make in table.items():
            ctx = make()
            if ctx is None:
                w, c = run(model, enc, args.new_tokens)
            else:
                with ctx:
                    w, c = run(model, enc, args.new_tokens)
            wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
    n_tok = args.batch * args.new_tokens
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, "
          f"{len(find_layers(model))} layers, d_model {d_model(model)}), device {args.device}, "
          f"{args.threads} threads, batch {args.batch}, {args.new_tokens} new tokens, best of {args.repeats}; "
          f"hooks at layer {layer}\n")
    print("| variant | tokens/s (wall) | vs plain (wall) | tokens/CPU-s | vs plain (CPU) | overhead CPU-ms/token |")
    print("|---|---|---|---|---|---|")
    for name in table:
        overhead = (cpu[name] - cpu["plain"]) / n_tok * 1e3
        print(f"| {name} | {n_tok / wall[name]:.1f} | {wall['plain'] / wall[name]:.3f}x | {n_tok / cpu[name]:.1f} "
              f"| {cpu['plain'] / cpu[name]:.3f}x | {overhead:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
