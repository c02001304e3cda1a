"""``corrsteer debias``: BBQ / EMGSD unsteered vs pipeline and/or label features, by category.

The computation is :mod:`corrsteer.studies.debiasing`.

Example::

    corrsteer debias --selection runs/bbq/selection --labels runs/labels_emgsd --n-test 150 --out runs/debias
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from corrsteer.cli.common import add_global_flags, parse_layers

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``debias`` to the ``corrsteer`` parser."""
    text = ("Steer BBQ and EMGSD with reward-correlated (--selection) and/or EMGSD label features (--labels); "
            "accuracy and bias by category.")
    p = sub.add_parser("debias", help="BBQ / EMGSD unsteered vs pipeline or label features, by category",
                       description=text)
    add_global_flags(p, top=False)
    p.add_argument("--selection", help="selection folder from `corrsteer run --task bbq_ambig` (condition 'pipeline')")
    p.add_argument("--labels", help="folder from `corrsteer labels --dataset emgsd` (condition 'labels')")
    p.add_argument("--add", default="neutral", help="label whose top feature is added (neutral)")
    p.add_argument("--subtract", default="stereotype", help="label whose top feature is subtracted (stereotype)")
    p.add_argument("--scale", type=float, default=1.0, help="factor on the label coefficients (1.0)")
    p.add_argument("--tasks", help="tasks, comma-separated (default: bbq_ambig,bbq_disambig,emgsd)")
    p.add_argument("--model", default="gemma-3-270m", help="embedded name, HF folder, .gguf or hub id")
    p.add_argument("--sae", default="default", help="SAEs of the label features: 'default' or paths")
    p.add_argument("--layers", help="label layers: 3,6,9 | 2-5 | all (default: every layer of --labels)")
    p.add_argument("--n-test", type=int, default=150, help="test samples per task (150)")
    p.add_argument("--seed", type=int, default=0, help="test draw and bootstrap seed (0)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per generation batch (16)")
    p.add_argument("--max-new-tokens", type=int, help="override the tasks' generation length")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (2000)")
    p.add_argument("--data-dir", help="datasets root")
    p.add_argument("--device", help="torch device")
    p.add_argument("--out", default="runs/debias", help="output folder (runs/debias)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(handler=_debias)


def _debias(args: argparse.Namespace) -> None:
    from corrsteer.method.features import Selection
    from corrsteer.models import load_model
    from corrsteer.sae.sets import load_saes
    from corrsteer.studies.debiasing import DEFAULT_TASKS, debias, label_selection, write_debias_report
    from corrsteer.studies.labels import LabelCorrelations

    if not args.selection and not args.labels:
        raise ValueError("give --selection (pipeline features), --labels (label features) or both")
    if args.n_test < 1 or args.n_boot < 1 or args.batch_size < 1:
        raise ValueError("--n-test, --n-boot and --batch-size must be >= 1")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(DEFAULT_TASKS)
    conditions: dict[str, Any] = {}
    if args.selection:
        conditions["pipeline"] = Selection.load(args.selection)  # bad folders fail before the model loads
    lc = LabelCorrelations.load(args.labels) if args.labels else None
    model, tokenizer = load_model(args.model, device=args.device)
    if lc is not None:
        layers = parse_layers(args.layers) or tuple(lc.layers)
        saes = load_saes(args.sae, model, tokenizer, layers, progress=args.progress)
        conditions["labels"] = label_selection(lc, saes, args.add, args.subtract, args.scale, layers)
    doc = debias(model, tokenizer, conditions, tasks, n_test=args.n_test, seed=args.seed, batch_size=args.batch_size,
                 data_dir=args.data_dir, max_new_tokens=args.max_new_tokens, n_boot=args.n_boot,
                 progress=args.progress)
    doc["command"] = args.command_line
    path = write_debias_report(doc, args.out)
    print(path.read_text(encoding="utf-8"))
    print(f"saved {path} and {Path(args.out) / 'debias.json'}")
