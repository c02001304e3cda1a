"""The command line of label correlation: ``corrsteer labels`` and the shared data options.

:func:`add_data_options` and :func:`data_from_args` are the dataset and model options
shared by ``corrsteer labels`` and ``corrsteer compare-saes``
(:mod:`corrsteer.sae_comparison`); :func:`run_cli` parses, sets up logging and turns
errors into exit codes for those commands and ``corrsteer debias``;
:func:`main_labels` is ``corrsteer labels`` itself. The computation is
:mod:`corrsteer.labels`, the data :mod:`corrsteer.labelled`.

Example::

    corrsteer labels --dataset emgsd --model gemma-3-270m --sae default --n 2000 --out runs/labels_emgsd
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corrsteer import atomic
from corrsteer.labelled import LabelledTexts, load_labelled
from corrsteer.labels import POOLS, label_correlations

__all__ = ["add_data_options", "data_from_args", "main_labels", "run_cli"]


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The options shared by ``corrsteer labels`` and ``corrsteer compare-saes``."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="emgsd | sst2 | a CSV/TSV/JSONL/JSON file")
    g.add_argument("--split", help="emgsd/sst2: train (default) | validation | test | all")
    g.add_argument("--text-column", default="text", help="files: the text column (text)")
    g.add_argument("--label-column", default="label", help="files: the label column (label)")
    g.add_argument("--group-column", help="files: a group column for --groups")
    g.add_argument("--groups", help="keep only these groups, comma-separated (emgsd: its categories)")
    g.add_argument("--keep-labels", help="keep only these labels, comma-separated (e.g. stereotype,neutral)")
    g.add_argument("--n", type=int, help="draw this many rows (seeded); default all")
    g.add_argument("--seed", type=int, default=0, help="seed of the draw (0)")
    g.add_argument("--data-dir", help="datasets root (default: ../shared/datasets or $CORRSTEER_DATA)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="gemma-3-270m", help="embedded name, HF folder, .gguf or hub id")
    g.add_argument("--device", help="torch device (default: cuda if available)")
    g.add_argument("--layers", help="layers: 3,6,9 | 2-5 | all (default: every SAE's layer)")
    g.add_argument("--pool", default="max", choices=POOLS, help="pooling over the text's tokens (max)")
    g.add_argument("--batch-size", type=int, default=16, help="texts per forward pass (16)")
    g.add_argument("--max-length", type=int, default=128, help="tokens per text (128)")
    g.add_argument("--out", help="output folder")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)")
    g.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def data_from_args(args: argparse.Namespace) -> LabelledTexts:
    """:func:`load_labelled` with the options of :func:`add_data_options`."""
    groups = None if not args.groups else {g.strip() for g in args.groups.split(",") if g.strip()}
    keep_labels = None if not args.keep_labels else [k.strip() for k in args.keep_labels.split(",") if k.strip()]
    return load_labelled(args.dataset, split=args.split, text_column=args.text_column,
                         label_column=args.label_column, group_column=args.group_column, groups=groups,
                         keep_labels=keep_labels, n=args.n, seed=args.seed, data_dir=args.data_dir)


def run_cli(argv: Sequence[str] | None, parser: argparse.ArgumentParser, body: Any) -> int:
    """Parse, set up logging, run ``body(args)``; user errors exit 2, library errors 1."""
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    from corrsteer.cli import report_errors

    return report_errors(lambda: body(args), args.debug, f"corrsteer {parser.prog.split()[-1]}")


def _labels_body(args: argparse.Namespace) -> None:
    from corrsteer.cli import parse_layers
    from corrsteer.models import load_model, model_id
    from corrsteer.pipeline import load_saes

    layers = parse_layers(args.layers)
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    t0 = time.perf_counter()
    data = data_from_args(args)  # bad data fails before the model loads
    model, tokenizer = load_model(args.model, device=args.device)
    saes = load_saes(args.sae, model, tokenizer, layers)
    lc = label_correlations(model, tokenizer, saes, data.texts, data.labels, groups=data.groups, pool=args.pool,
                            batch_size=args.batch_size, max_length=args.max_length, null_seed=args.seed,
                            progress=args.progress)
    lc.meta.update({"source": data.source, "model": model_id(model), "sae": args.sae, "command": args.command_line,
                    "total_s": round(time.perf_counter() - t0, 1)})
    out = Path(args.out or f"runs/labels_{Path(args.dataset).stem}")
    lc.save(out, k=max(args.top_k, 10))
    text = (f"# Label features: {data.source}\n\nmodel {lc.meta['model']} · SAE {args.sae} · pool {args.pool} · "
            f"{lc.n} texts {lc.counts} · {lc.meta['seconds']:.0f} s (total {lc.meta['total_s']:.0f} s)\n\n"
            f"`{args.command_line}`\n\n" + lc.markdown(args.top_k))
    atomic.write_text(out / "labels.md", text)
    print(text)
    print(f"saved {out / 'labels.json'}, {out / 'labels.md'} and {out / 'acc'}")


def main_labels(argv: Sequence[str] | None = None) -> int:
    """``corrsteer labels``: per label and layer, the SAE features that fire for the label.

    Example::

        corrsteer labels --dataset emgsd --model gemma-3-270m --sae default --n 2000 --out runs/labels_emgsd

    Prints the top features (r, coefficient, frequency) per label and layer and saves
    ``labels.json``, ``labels.md`` and the accumulators under ``--out``.
    """
    p = argparse.ArgumentParser(prog="corrsteer labels",
                                description="Per label and layer, the SAE features that fire for the label.")
    add_data_options(p)
    p.add_argument("--sae", default="default",
                   help="'default' (the model's trained SAEs) or SAE paths, comma-separated")
    p.add_argument("--top-k", type=int, default=5, help="features shown per label and layer (5)")
    argv = list(sys.argv[1:] if argv is None else argv)
    p.set_defaults(command_line=" ".join(["corrsteer labels", *argv]))
    return run_cli(argv, p, _labels_body)
