"""How much a collection depends on the number of CPU threads (torch's and OpenBLAS's).

    python scripts/repro_check.py --threads 1 --out a.npz
    python scripts/repro_check.py --threads 2 --out b.npz
    python scripts/repro_check.py --compare a.npz b.npz

Collects ``--n`` food continuations with the default SAEs and saves every layer's r and
coefficient and the completions; ``--compare`` prints how many completions differ, the largest
difference in r and in the coefficient, and whether the top feature of each layer is the same.
Each run must be its own process: the thread count is fixed before torch starts.
"""

from __future__ import annotations

import argparse
import os
import sys


def run(threads: int, n: int, out: str) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    import corrsteer

    model, tok = corrsteer.load_model("gemma-3-270m")
    saes = corrsteer.load_saes("default", model, tok, progress=False)
    task = corrsteer.get_task("food")
    col = corrsteer.collect(model, tok, task, saes, task.samples("train", n), batch_size=32, progress=False)
    arrays = {}
    for layer, acc in col.accumulators.items():
        arrays[f"r{layer}"] = acc.correlation()
        arrays[f"c{layer}"] = acc.coefficient()
    arrays["completions"] = np.array([r["completion"] for r in col.records])
    np.savez(out, **arrays)


def compare(a: str, b: str) -> None:
    import numpy as np

    x, y = np.load(a), np.load(b)
    same = int(np.sum(x["completions"] == y["completions"]))
    print(f"completions identical: {same} / {len(x['completions'])}")
    for key in sorted(k for k in x.files if k != "completions"):
        d = np.nanmax(np.abs(x[key] - y[key]))
        line = f"{key}: max |diff| {d:.3g}"
        if key.startswith("r"):
            line += f", top feature {int(np.nanargmax(x[key]))} vs {int(np.nanargmax(y[key]))}"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=64, help="training continuations (64)")
    ap.add_argument("--out", default="repro.npz")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        compare(*args.compare)
    else:
        run(args.threads, args.n, args.out)


if __name__ == "__main__":
    sys.exit(main())
