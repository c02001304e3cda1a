"""Train the shipped sentiment judge from SST-2 and write ``corrsteer/tasks/judges/sentiment_sst2.json``.

Usage::

    python scripts/train_judges.py                 # datasets from ../shared/datasets or $CORRSTEER_DATA
    python scripts/train_judges.py --data-dir /path/to/datasets
    python scripts/train_judges.py --check         # retrain and compare with the shipped file, write nothing

Deterministic: the same SST-2 files give the same file byte for byte (a test checks the
weights). Takes 20 s on an idle core, about 1.5 min on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time

from corrsteer.tasks.data import dataset_dir
from corrsteer.tasks.judging import SENTIMENT_FILE, NgramJudge, build_sentiment_judge


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="datasets root (holding sst2/) or the sst2 folder itself")
    ap.add_argument("--out", default=str(SENTIMENT_FILE), help="where to write the judge (default: the shipped file)")
    ap.add_argument("--check", action="store_true", help="compare a retrained judge with --out instead of writing it")
    args = ap.parse_args(argv)

    folder = dataset_dir("sst2", "*.tsv", args.data_dir)
    start = time.perf_counter()
    judge = build_sentiment_judge(folder)
    meta = judge.meta
    print(f"trained on {folder}/train.tsv in {time.perf_counter() - start:.1f} s: {meta['n_features']} n-grams, "
          f"l2={meta['l2']} (5-fold CV accuracy by l2: {meta['cv']['accuracy_by_l2']})")
    print(f"train accuracy {meta['train_accuracy']:.4f}, dev accuracy {meta['dev_accuracy']:.4f} "
          f"on {meta['n_dev']} sentences of {folder}/dev.tsv")
    if args.check:
        shipped = NgramJudge.load(args.out)
        same = shipped.weights == judge.weights and shipped.bias == judge.bias
        print(f"{args.out}: {'identical weights' if same else 'DIFFERENT weights'}; "
              f"stored dev accuracy {shipped.meta.get('dev_accuracy')}")
        return 0 if same else 1
    judge.save(args.out)
    print(f"wrote {args.out}")
    for label, items in judge.top(12).items():
        print(f"  most {label}: " + ", ".join(f"{g} ({w:+.2f})" for g, w in items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
