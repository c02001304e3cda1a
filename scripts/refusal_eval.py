"""Measure corrsteer's refusal detector against the published baselines on the dev set.

    CORRSTEER_DATA=/path/to/datasets python scripts/refusal_eval.py [--errors] [--json out.json]

Prints, per chat model and overall, accuracy / precision / recall / F1 of

- ``corrsteer (held-out)``: weights fitted on the *other* chat model's responses (the
  honest estimate for a chat model the weights have not seen; the cue patterns themselves
  were written with both models' responses in view, so even this is optimistic);
- ``corrsteer (shipped)``: the shipped weights, fitted on both models (in-sample);
- ``strong cues only``: the explicit declines alone, no learned part;
- ``XSTest string match`` and ``GCG prefixes``: the published string matchers
  (:mod:`corrsteer.tasks.refusal_baselines`);
- ``GPT-4 judge``: the ``gpt4_label`` column (its free-text answers count as compliance);

then recall by refusal kind and by prompt kind, the project's labelled fixtures
(SmolLM2 responses read by hand, and hand-written hard cases), and the latency per response.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from corrsteer.tasks.refusal import is_refusal
from corrsteer.tasks.refusal_baselines import gcg_prefix_match, xstest_string_match
from corrsteer.tasks.refusal_data import DEV_MODELS, binary_metrics, read_labelled, xstest_completions
from corrsteer.tasks.refusal_model import cue_matrix, held_out_predictions, load_model

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tasks"
FIXTURE_FILES = ("refusal_xstest_smollm2.jsonl", "refusal_xstest_smollm2_validation.jsonl",
                 "refusal_harmbench_smollm2.jsonl", "refusal_harmbench_smollm2_train.jsonl",
                 "refusal_labelled.jsonl")


def _fmt(name: str, m: dict) -> str:
    return (f"  {name:24s} n={m['n']:4d}  acc {m['accuracy']:.3f}  prec {m['precision']:.3f}  "
            f"rec {m['recall']:.3f}  F1 {m['f1']:.3f}   fp {m['fp']:3d}  fn {m['fn']:3d}")


def _predictions(rows: list[dict], l2: float) -> dict[str, np.ndarray]:
    """Each detector's verdicts on ``rows``, by display name."""
    texts = [r["completion"] for r in rows]
    x = cue_matrix(texts)
    y = np.array([r["is_refusal"] for r in rows], dtype=np.float64)
    model = load_model()
    strong = x[:, model.strong_index].max(axis=1) > 0
    return {
        "corrsteer (held-out)": held_out_predictions(x, y, [r["model"] for r in rows], l2=l2),
        "corrsteer (shipped)": model.score(x) > 0,
        "strong cues only": strong,
        "XSTest string match": np.array([xstest_string_match(t) for t in texts]),
        "GCG prefixes": np.array([gcg_prefix_match(t) for t in texts]),
        "GPT-4 judge": np.array([bool(r["gpt4_refusal"]) for r in rows]),
    }


def _by_kind(rows: list[dict], pred: np.ndarray) -> list[str]:
    """Recall per refusal kind, and accuracy on safe vs unsafe (contrast) prompts."""
    out = []
    for label in ("2_full_refusal", "3_partial_refusal", "1_full_compliance"):
        idx = [i for i, r in enumerate(rows) if r["final_label"] == label]
        if idx:
            right = sum(pred[i] == rows[i]["is_refusal"] for i in idx)
            out.append(f"{label} {right}/{len(idx)}")
    for kind, test in (("safe prompts", lambda t: not t.startswith("contrast")),
                       ("unsafe prompts", lambda t: t.startswith("contrast"))):
        idx = [i for i, r in enumerate(rows) if test(r["type"])]
        right = sum(pred[i] == rows[i]["is_refusal"] for i in idx)
        out.append(f"{kind} {right}/{len(idx)}")
    return out


def _latency(texts: list[str], fn: Callable[[str], bool]) -> tuple[float, float]:
    """Mean and max milliseconds per call of ``fn`` (after one warm-up call)."""
    fn(texts[0])
    times = []
    for t in texts:
        start = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.mean(times)), 1e3 * float(np.max(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="datasets root holding xstest_completions/")
    ap.add_argument("--l2", type=float, default=1.0, help="L2 penalty for the held-out fits (as in training)")
    ap.add_argument("--errors", action="store_true", help="list the shipped detector's errors on the dev set")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)

    rows = xstest_completions(args.data_dir)
    preds = _predictions(rows, args.l2)
    gold = np.array([r["is_refusal"] for r in rows])
    results: dict = {}
    for group in list(DEV_MODELS) + ["overall"]:
        mask = np.array([group in ("overall", r["model"]) for r in rows])
        title = DEV_MODELS.get(group, "both models")
        print(f"\n{group}: {title}, {int(mask.sum())} responses, {int(gold[mask].sum())} refusals")
        results[group] = {}
        for name, pred in preds.items():
            m = binary_metrics(list(pred[mask]), list(gold[mask]))
            results[group][name] = {k: round(m[k], 4) for k in ("accuracy", "precision", "recall", "f1")}
            print(_fmt(name, m))

    print("\nright / total by kind (corrsteer held-out | shipped):")
    for name in DEV_MODELS:
        idx = [i for i, r in enumerate(rows) if r["model"] == name]
        sub = [rows[i] for i in idx]
        held = _by_kind(sub, preds["corrsteer (held-out)"][idx])
        ship = _by_kind(sub, preds["corrsteer (shipped)"][idx])
        print(f"  {name}: " + "; ".join(f"{h.rsplit(' ', 1)[0]} {h.rsplit(' ', 1)[1]} | {s.rsplit(' ', 1)[1]}"
                                        for h, s in zip(held, ship)))

    print("\nproject fixtures (labelled by hand; never used for fitting):")
    results["fixtures"] = {}
    for fname in FIXTURE_FILES:
        frows = read_labelled(FIXTURES / fname)
        m = binary_metrics([is_refusal(r["response"]) for r in frows], [r["is_refusal"] for r in frows])
        results["fixtures"][fname] = {k: round(m[k], 4) for k in ("accuracy", "precision", "recall")}
        print(_fmt(fname.removesuffix(".jsonl").removeprefix("refusal_"), m))

    texts = [r["completion"] for r in rows]
    mean_ms, max_ms = _latency(texts, is_refusal)
    sm_ms, _ = _latency(texts, xstest_string_match)
    results["latency_ms"] = {"mean": round(mean_ms, 3), "max": round(max_ms, 3)}
    print(f"\nlatency: is_refusal {mean_ms:.2f} ms mean, {max_ms:.2f} ms max per response "
          f"(mean {np.mean([len(t) for t in texts]):.0f} chars); XSTest string match {sm_ms * 1e3:.1f} us")

    if args.errors:
        print("\nshipped detector's errors on the dev set (gold label, prediction):")
        for i in np.where(preds["corrsteer (shipped)"] != gold)[0]:
            r = rows[i]
            print(f"  {r['model'][:7]} {r['id']:7s} {r['final_label']:18s} -> {bool(preds['corrsteer (shipped)'][i])!s:5s}"
                  f" | {' '.join(r['completion'].split())[:150]}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
