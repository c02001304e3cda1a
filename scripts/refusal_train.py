"""Fit the refusal model's weights on the human-labelled XSTest responses and write them.

    CORRSTEER_DATA=/path/to/datasets python scripts/refusal_train.py          # writes the shipped file
    python scripts/refusal_train.py --check                                   # retrain, compare, write nothing

Data: ``xstest_completions/`` (900 responses of Llama-2-70b-chat and Mistral-7B-Instruct to
the XSTest prompts, labelled by two people; CC-BY-4.0, Röttger et al. 2024). A full or
partial refusal is a refusal. Prints leave-one-model-out numbers (fitted on one chat model,
measured on the other: the honest estimate) and in-sample numbers (labelled as such).
Deterministic: rerunning reproduces ``corrsteer/tasks/refusal_weights.json`` exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from corrsteer.tasks.data import dataset_dir
from corrsteer.tasks.refusal_data import DATASET, DEV_MODELS, FILE_PATTERN, binary_metrics, xstest_completions
from corrsteer.tasks.refusal_model import (WEIGHTS_PATH, cue_matrix, fit_model, held_out_predictions,
                                           load_model, save_model)


def _line(name: str, m: dict) -> str:
    return (f"  {name:28s} n={m['n']:4d} acc {m['accuracy']:.3f}  prec {m['precision']:.3f}  "
            f"rec {m['recall']:.3f}  f1 {m['f1']:.3f}  (fp {m['fp']}, fn {m['fn']})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="datasets root holding xstest_completions/")
    ap.add_argument("--l2", type=float, default=1.0, help="L2 penalty on the weights (default 1.0)")
    ap.add_argument("--out", default=str(WEIGHTS_PATH), help="where to write the weights JSON")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args(argv)

    rows = xstest_completions(args.data_dir)
    x = cue_matrix([r["completion"] for r in rows])          # (n, n_cue)
    y = np.array([r["is_refusal"] for r in rows], dtype=np.float64)
    groups = [r["model"] for r in rows]

    held = held_out_predictions(x, y, groups, l2=args.l2)
    model = fit_model(x, y, l2=args.l2)
    fitted = model.score(x) > 0
    report: dict = {"leave_one_model_out": {}, "in_sample": {}}
    print("leave-one-model-out (weights fitted on the other model's responses):")
    for name in DEV_MODELS:
        mask = np.array([g == name for g in groups])
        m = binary_metrics(list(held[mask]), list(y[mask] > 0))
        report["leave_one_model_out"][name] = {k: round(m[k], 4) for k in ("accuracy", "precision", "recall", "f1")}
        print(_line(name, m))
    print("in-sample (weights fitted on both models; not an estimate):")
    for name in DEV_MODELS:
        mask = np.array([g == name for g in groups])
        m = binary_metrics(list(fitted[mask]), list(y[mask] > 0))
        report["in_sample"][name] = {k: round(m[k], 4) for k in ("accuracy", "precision", "recall", "f1")}
        print(_line(name, m))

    folder = dataset_dir(DATASET, FILE_PATTERN.format(model="*"), args.data_dir)
    files = [{"file": f"{DATASET}/{FILE_PATTERN.format(model=m)}",
              "sha256": hashlib.sha256((Path(folder) / FILE_PATTERN.format(model=m)).read_bytes()).hexdigest(),
              "rows": groups.count(m)} for m in DEV_MODELS]
    meta = {"command": "python scripts/refusal_train.py", "l2": args.l2, "trained_on": files,
            "label": "refusal = final_label 2_full_refusal or 3_partial_refusal (human labels)",
            "license": "XSTest completions: CC-BY-4.0 (Rottger et al., 2024)", **report}
    if args.check:
        shipped = load_model(args.out)
        diff = float(np.max(np.abs(shipped.weights - np.round(model.weights, 6))))
        diff = max(diff, abs(shipped.bias - round(model.bias, 6)))
        print(f"max |shipped - retrained| = {diff:.2e}")
        return 0 if diff < 1e-5 else 1
    save_model(model, args.out, meta)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
