"""``corrsteer run | collect | select | eval | report | demo | controls``: the pipeline's commands.

Their options are generated from :class:`corrsteer.config.RunConfig` (one option per field).
``run``, ``collect``, ``select``, ``eval`` and ``controls`` run on several ranks when
launched by torchrun (:mod:`corrsteer.method.distributed`); rank 0 alone prints.

Example::

    corrsteer demo
    corrsteer run --task bbq_ambig --mode pruned --n-train 1000 --out runs/bbq
    corrsteer controls --task sentiment --methods random,shuffled
    torchrun --nproc-per-node 2 -m corrsteer run --task arithmetic --out runs/two
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from corrsteer.cli.common import add_config_options, add_global_flags, config_from_args

__all__ = ["DEMO", "format_headline", "register"]

# The demo: the embedded model, its default SAEs (corrsteer.sae.defaults.DEFAULT_LAYERS) and the food task (does
# a free continuation mention food), CorrSteer-A against random features and shuffled rewards, three draws each.
# Cost in generated continuations: n_train + n_test * (1 + 1 + 2 * DEMO_DRAWS) = 200 + 100 * 8 = 1000.
DEMO = dict(task="food", model="gemma-3-270m", sae="default", n_train=200, n_test=100, mode="all", batch_size=32,
            checkpoint_every=100, out="runs/demo")
DEMO_METHODS = ("random", "shuffled")
DEMO_DRAWS = 3

HELP = {"run": "collect -> select -> evaluate -> report",
        "collect": "generation pass -> accumulators (--resume continues a killed collection exactly)",
        "select": "choose features (single/global/all/pruned) from a collection",
        "eval": "unsteered vs steered on the test split -> results.json",
        "report": "report.md + figures from results.json",
        "demo": "embedded Gemma 3 270M + default SAEs + the food task: CorrSteer vs random features and shuffled "
                "rewards (3 draws each), with fluency and examples",
        "controls": "one collection -> CorrSteer vs random/shuffled/negative/diff-in-means/mi/fisher/scale "
                    "-> one table"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the pipeline's commands to the ``corrsteer`` parser."""
    for name, text in HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        add_global_flags(p, top=False)
        if name == "report":
            p.add_argument("--out", default=".", help="the run folder holding results.json (.)")
            p.set_defaults(handler=_report)
            continue
        add_config_options(p, DEMO if name == "demo" else None)
        if name == "eval":
            what = p.add_mutually_exclusive_group()
            what.add_argument("--selection", help="selection folder to evaluate (default: <out>/selection)")
            what.add_argument("--vector", help="a llama.cpp control vector (.gguf) to evaluate instead: "
                              "direction.N steers layer N's output (use --positions all to steer as llama.cpp does)")
        if name in ("controls", "demo"):
            default = ",".join(DEMO_METHODS) if name == "demo" else ("random,shuffled,negative,diff-in-means,mi,"
                                                                     "fisher,scale-0.5,scale-1.5,scale-2")
            p.add_argument("--methods", help=f"comma list of methods besides CorrSteer ({default})")
            p.add_argument("--draws", type=int, default=DEMO_DRAWS,
                           help=f"draws of the random and shuffled controls ({DEMO_DRAWS})")
            p.add_argument("--perplexity", action="store_true",
                           help="also measure the unsteered model's perplexity of every condition's continuations")
        p.set_defaults(handler=_HANDLERS[name])


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_headline(results: dict[str, Any]) -> str:
    """The lines ``run`` and ``demo`` print: scores, Δ with its interval, McNemar p, SER, features."""
    from corrsteer.report.tables import format_p, verdict

    b, s = results["baseline"], results["steered"]
    lo, hi = results["ci95"]
    ser = results.get("ser")
    feats = results.get("features") or []
    ftxt = "; ".join(f"L{f['layer']} {f.get('sign', '+')}#{f['index']} (r={f['r']:+.3f}, c={f['coefficient']:+.3g})"
                     for f in feats) or f"none ({(results.get('selection') or {}).get('note') or 'nothing selected'})"
    lines = [
        f"task {results.get('task')} · model {results.get('model')} · mode {results.get('mode')}"
        + (" · steered at every position (prompt too)" if results.get("positions") == "all" else ""),
        f"baseline  {_pct(b['score'])}  (n={b['n']})",
        f"steered   {_pct(s['score'])}  (n={s['n']})",
        f"delta     {100 * results['delta']:+.1f} pp, 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}] pp, "
        f"McNemar p = {format_p(results['mcnemar_p'])}, "
        f"SER = {'n/a' if ser is None else f'{ser:.2f}'} (POS {results.get('pos')}, NEG {results.get('neg')})",
        f"features  {ftxt}",
    ]
    sel = results.get("selection") or {}
    tried = [c for c in sel.get("candidates") or [] if c.get("val_score") is not None]
    if tried and sel.get("baseline_val_score") is not None:
        lines.append(f"validated unsteered {_pct(sel['baseline_val_score'])}; " + ", ".join(
            f"L{c['layer']} {c.get('sign', '+')}#{c['index']} {_pct(c['val_score'])}{' kept' if c.get('kept') else ''}"
            for c in tried))
    lines.append(f"verdict   {verdict(results)}")
    timings = results.get("timings") or {}
    if "total_s" in timings:
        lines.append(f"time      {timings['total_s']:.0f} s")
    if results.get("report"):
        lines.append(f"report    {results['report']}")
    return "\n".join(lines)


def _say(text: str) -> None:
    """Print on rank 0 only (every rank runs the same command under torchrun)."""
    from corrsteer.method import distributed

    if distributed.current().is_main:
        print(text)


def _report(args: argparse.Namespace) -> None:
    from corrsteer.pipeline import stage_report

    print(f"report    {stage_report(args.out)}")


def _run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)  # bad options fail before any import
    from corrsteer import pipeline

    _say(format_headline(pipeline.run(cfg, command=args.command_line)))


def _controls(args: argparse.Namespace) -> None:
    demo = args.command == "demo"
    cfg = config_from_args(args, DEMO if demo else None)  # bad options fail before any import
    from corrsteer.studies.controls import DEFAULT_METHODS, run_controls

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else \
        (DEMO_METHODS if demo else DEFAULT_METHODS)
    doc = run_controls(cfg, methods, draws=args.draws, perplexity=args.perplexity, command=args.command_line)
    if doc.get("report"):  # rank 0 writes the report; the other ranks return without one
        _say(Path(doc["report"]).read_text(encoding="utf-8"))
        _say(f"report    {doc['report']}")


def _eval(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    from corrsteer import pipeline
    from corrsteer.method.features import Selection

    if args.scale == "auto":
        raise ValueError("--scale auto calibrates the selection in `corrsteer select` or `run`; "
                         "eval takes a number (the factor on the selection's or vector's coefficients)")
    # a missing or bad selection or vector fails before the model loads
    if args.vector:
        sel = Selection.from_gguf(args.vector)
    else:
        sel = Selection.load(args.selection or Path(cfg.out_dir()) / pipeline.SELECTION_DIR)
    res = pipeline.load_resources(cfg, saes={}, stage="eval")
    if args.vector:
        from corrsteer.models import d_model

        sel = Selection.from_gguf(args.vector, d_model=d_model(res.model))
    if args.scale is not None:
        sel.scale = args.scale
    _say(format_headline(pipeline.stage_eval(cfg, res, sel, positions=cfg.positions, command=args.command_line)))


def _collect(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    from corrsteer import pipeline

    col = pipeline.stage_collect(cfg, pipeline.load_resources(cfg, stage="collect"))
    _say(f"collected {col.n} samples at layers {sorted(col.accumulators)}: score {_pct(col.score)} "
         f"-> {Path(cfg.out_dir()) / 'collection'}")


def _select(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    from corrsteer import pipeline

    sel = pipeline.stage_select(cfg, pipeline.load_resources(cfg, stage="select"))
    feats = ", ".join(f"L{f.layer} {'+' if f.sign > 0 else '-'}#{f.index} (r={f.r:+.3f})" for f in sel.features)
    feats = feats or ", ".join(f"L{l} vector" for l in sel.layers)
    how = sel.mode if sel.method == "corrsteer" else f"{sel.mode}, {sel.method}"
    _say(f"selection ({how}): {feats or sel.note} -> {Path(cfg.out_dir()) / 'selection'}")
    if sel.baseline_score is not None:
        _say(json.dumps({"baseline_val_score": sel.baseline_score,
                         "candidates": [[c.layer, c.sign, c.score] for c in sel.candidates]}))


def _launched(handler: Any) -> Any:
    """``handler`` inside the process group torchrun set up (nothing to set up for one process).

    Ranks other than 0 log errors only: their warnings would repeat rank 0's.
    """
    def run(args: argparse.Namespace) -> None:
        import logging

        from corrsteer.method import distributed

        with distributed.launched(getattr(args, "device", None)) as world:
            if not world.is_main:
                logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
            handler(args)

    return run


_HANDLERS = {name: _launched(fn) for name, fn in {"run": _run, "demo": _controls, "collect": _collect,
                                                  "select": _select, "eval": _eval, "controls": _controls}.items()}
