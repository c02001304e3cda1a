"""How strong the feature-reward correlations of collections are, layer by layer: for comparing SAE sets.

    python scripts/correlation_strength.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a run folder with a finished collection (`corrsteer run/collect/controls --out
RUN_DIR`), e.g. `runs/width/default-food-seed0` (the default SAEs) and `runs/width/8k-food-seed0`
(the 8,192-latent SAEs on the same samples; `bash scripts/results.sh width`). Per layer it prints
the SAE's width, the latents that fired on at least one collection sample, the largest positive
and negative r, and how many latents reach |r| >= 0.4. A larger dictionary offers more
candidates, so its largest |r| rises by chance alone: `null max |r|` is the median largest |r|
of that many independent latents unrelated to the reward (r about normal with sd
1/sqrt(n - 1)): the bar a real gain must clear.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np

from corrsteer.method.checkpoints import load_collection

THRESHOLD = 0.4


def null_max(n_latents: int, n_samples: int) -> float:
    """The median largest |r| of ``n_latents`` independent latents unrelated to the reward.

    Each such r is about normal with sd 1/sqrt(n - 1); the largest |r| of m of them is below t with
    probability (1 - 2 P(Z > t sqrt(n - 1)))^m, which is 1/2 at the value returned.
    """
    if n_latents < 1 or n_samples < 3:
        return float("nan")
    tail = (1 - 0.5 ** (1 / n_latents)) / 2  # P(Z > z) for one latent at the median of the maximum
    return NormalDist().inv_cdf(1 - tail) / math.sqrt(n_samples - 1)


def rows(run: Path) -> list[str]:
    col = load_collection(run)
    out = []
    for layer, acc in sorted(col.accumulators.items()):
        r = acc.correlation()
        alive = int((np.asarray(acc.frequency()) > 0).sum())
        out.append(f"| {run} | {layer} | {acc.d_sae} | {alive} | {r.max():+.3f} | {r.min():+.3f} | "
                   f"{int((np.abs(r) >= THRESHOLD).sum())} | {null_max(alive, acc.n):.3f} | {acc.n} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders with a finished collection")
    args = ap.parse_args(argv)
    print(f"| run | layer | d_sae | latents that fired | max r | min r | latents with abs(r) >= {THRESHOLD} "
          "| null max abs(r) | samples |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        try:
            print("\n".join(rows(run)))
        except ValueError as exc:  # no collection there, or an unfinished one: the message names the fix
            sys.exit(f"error: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
