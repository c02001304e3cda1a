"""Base rate of a task: the share of unsteered greedy completions that earn reward 1.

Usage::

    python scripts/base_rate.py --task sentiment --split test --n 300
    python scripts/base_rate.py --task food --split test --n 300 --out runs/base_rate_food.jsonl

Prints the rate with a 95% Wilson interval and, per category, the count and rate; with
``--out`` writes one JSON line per sample (prompt, completion, judge value, reward) to
read the completions. Same generation settings as ``corrsteer run``: greedy, the task's
``max_new_tokens`` and stop strings, base prompt for a base model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

from corrsteer.method.generation import generate
from corrsteer.models import load_model
from corrsteer.tasks import get_task


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--split", default="test", choices=("train", "validation", "test"))
    ap.add_argument("--n", type=int, default=300, help="samples drawn from the split (seeded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=None, help="write the completions as JSON lines here")
    args = ap.parse_args(argv)

    task = get_task(args.task)
    samples = task.samples(args.split, min(args.n, len(task.samples(args.split))), seed=args.seed)
    model, tok = load_model(args.model)
    start = time.perf_counter()
    prompts = [task.prompt(s, tok) for s in samples]
    gens = generate(model, tok, prompts, task.max_new_tokens, stop_strings=task.stop_strings,
                    batch_size=args.batch_size, progress=True)
    rows, by_cat = [], defaultdict(list)
    for s, g in zip(samples, gens):
        value = task.extract(s, g.completion)
        reward = task.reward(s, g.completion)
        by_cat[s.category].append(reward)
        rows.append({"id": s.id, "prompt": prompts[len(rows)], "completion": g.completion, "value": value,
                     "reward": reward, "n_new_tokens": g.n_new_tokens, "finished_by": g.finished_by})
    k, n = sum(r["reward"] for r in rows), len(rows)
    lo, hi = wilson(k, n)
    print(f"{task.name} on {args.model}, {args.split} split, n={n} (seed {args.seed}): base rate {k / n:.3f} "
          f"[{lo:.3f}, {hi:.3f}] ({k}/{n}); {time.perf_counter() - start:.0f} s; "
          f"mean new tokens {sum(r['n_new_tokens'] for r in rows) / n:.1f}; "
          f"empty completions {sum(not r['completion'].strip() for r in rows)}")
    for cat in sorted(by_cat, key=str):
        rs = by_cat[cat]
        print(f"  {cat}: {sum(rs)}/{len(rs)} = {sum(rs) / len(rs):.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
