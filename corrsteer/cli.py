"""The ``corrsteer`` command line (also ``python -m corrsteer``).

Subcommands::

    corrsteer demo                      # embedded Gemma 3 270M + default SAEs + arithmetic task
    corrsteer run --task mmlu --mode pruned --n-train 1000 --out runs/mmlu
    corrsteer collect | select | eval | report   # the stages of `run`, one at a time
    corrsteer train-sae ...             # corrsteer.sae.train's own command line
    corrsteer labels ...                # label correlation (corrsteer.labels, its own command line)
    corrsteer compare-saes ...          # best |r| per label of two SAE sets (corrsteer.sae_comparison)
    corrsteer controls --task bbq_ambig # one collection -> CorrSteer vs every control and baseline, one table
    corrsteer debias ...                # BBQ/EMGSD steered with pipeline or label features (corrsteer.debiasing)
    corrsteer info                      # build, BLAS, caches, tasks

Only this module prints. Errors that are the user's to fix (a bad option, a missing
file, a resume with other settings) print one ``corrsteer: error: ...`` line and
exit with status 2; the library's own failures exit with 1. ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from corrsteer.config import METHODS, MODES, POOLS, POSITIONS, RunConfig
from corrsteer.errors import CorrsteerError

STAGES = ("run", "collect", "select", "eval", "report", "demo", "controls")

# The demo: the embedded model, its default SAEs (corrsteer.sae.defaults.DEFAULT_LAYERS) and the generated task.
# Cost in generated samples: n_train + n_val * (1 + 2 * layers) + 2 * n_test = 160 + 352 + 192 = 704.
DEMO = dict(task="arithmetic", model="gemma-3-270m", sae="default", n_train=160, n_val=32, n_test=96,
            mode="pruned", batch_size=32, checkpoint_every=64, out="runs/demo")

# Subcommands that parse their own argv (their --help is their own), and the function each calls.
DELEGATED = {"train-sae": ("corrsteer.sae.train", "main_train"),
             "labels": ("corrsteer.labels", "main_labels"),
             "compare-saes": ("corrsteer.sae_comparison", "main_compare_saes"),
             "debias": ("corrsteer.debiasing", "main_debias")}
DELEGATED_HELP = {"train-sae": "train TopK SAEs on a model (corrsteer.sae.train; see train-sae --help)",
                  "labels": "per label and layer, the SAE features that fire for it (see labels --help)",
                  "compare-saes": "best |r| per label of two or more SAE sets (see compare-saes --help)",
                  "debias": "BBQ / EMGSD unsteered vs pipeline or label features, by category (see debias --help)"}

# Flags of the top-level parser, with how much verbosity each adds.
GLOBAL_FLAGS = {"-v": 1, "--verbose": 1, "-vv": 2, "--debug": 0}

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """``"3,6,9"`` -> (3, 6, 9); ``"2-5"`` -> (2, 3, 4, 5); None or ``"all"`` -> None (every SAE's layer)."""
    if text is None or text.strip().lower() == "all":
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                layers.extend(range(lo, hi + 1))
            else:
                layers.append(int(part))
    except ValueError:
        raise ValueError(f"--layers {text!r} is not a list of layer indices; write e.g. 3,6,9 or 2-5 or all") from None
    return tuple(layers)


def _stage_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run options (defaults: RunConfig)")
    g.add_argument("--task", help="task name (see `corrsteer info`)")
    g.add_argument("--model", help=f"embedded model name, local HF dir, .gguf file or hub id ({_DEFAULTS['model']})")
    g.add_argument("--sae", help="SAE path, comma list of paths, or 'default' (trained SAEs for the model)")
    g.add_argument("--data-dir", help="folder with the task's data files")
    g.add_argument("--layers", help="layers to use: 3,6,9 | 2-5 | all (default: every SAE's layer)")
    g.add_argument("--n-train", type=int, help=f"collection samples ({_DEFAULTS['n_train']})")
    g.add_argument("--n-val", type=int, help=f"validation samples for global/pruned ({_DEFAULTS['n_val']})")
    g.add_argument("--n-test", type=int, help=f"test samples ({_DEFAULTS['n_test']})")
    g.add_argument("--mode", help=f"selection mode: {' | '.join(MODES)} ({_DEFAULTS['mode']})")
    g.add_argument("--method", help=f"selection method: {' | '.join(METHODS)} | scale-S (corrsteer)")
    g.add_argument("--controls", action="store_true", default=None,
                   help="collect the controls' extra state too (shuffled rewards, class moments, residual means)")
    g.add_argument("--pool", help=f"pooling: {' | '.join(POOLS)} (default: the task's)")
    g.add_argument("--positions", help=f"collection positions: {' | '.join(POSITIONS)} (generation)")
    g.add_argument("--seed", type=int, help="sample draw and bootstrap seed (0)")
    g.add_argument("--device", help="torch device, e.g. cpu or cuda")
    g.add_argument("--batch-size", type=int, help=f"sequences per generation batch ({_DEFAULTS['batch_size']})")
    g.add_argument("--top-k", type=int, help="features per layer and sign in a candidate (1)")
    g.add_argument("--scale", type=float, help="factor on every steering coefficient (1.0)")
    g.add_argument("--max-new-tokens", type=int, help="override the task's generation length")
    g.add_argument("--n-boot", type=int, help=f"bootstrap resamples ({_DEFAULTS['n_boot']})")
    g.add_argument("--out", help="output folder (default: runs/<task>-<mode>-seed<seed>)")
    g.add_argument("--resume", action="store_true", default=None, help="continue an interrupted collection")
    g.add_argument("--checkpoint-every", type=int, help=f"samples between checkpoints ({_DEFAULTS['checkpoint_every']})")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    g.add_argument("--task-option", dest="task_option", action="append", default=None, metavar="KEY=VALUE",
                   help="keyword option of the task, repeatable (custom: path=, template=, label_column=, "
                        "task_name=...); a value that parses as JSON (5, true, [\"a\",\"b\"]) is used as "
                        "such")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``corrsteer`` (subcommands and their options)."""
    p = argparse.ArgumentParser(prog="corrsteer", description="Correlation-based steering of language models "
                                "with sparse-autoencoder features (CorrSteer).")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    helps = {"run": "collect -> select -> evaluate -> report", "collect": "generation pass -> accumulators",
             "select": "choose features (single/global/all/pruned) from a collection",
             "eval": "unsteered vs steered on the test split -> results.json",
             "report": "report.md + figures from results.json",
             "demo": "embedded Gemma 3 270M + default SAEs + the arithmetic task, end to end",
             "controls": "one collection -> CorrSteer vs random/shuffled/negative/diff-in-means/mi/fisher/scale "
                         "-> one table"}
    for name in STAGES:
        sp = sub.add_parser(name, help=helps[name], description=helps[name])
        _stage_options(sp)
        if name == "eval":
            sp.add_argument("--selection", help="selection folder to evaluate (default: <out>/selection)")
        if name == "controls":
            sp.add_argument("--methods", help="comma list of methods besides CorrSteer (default: "
                            "random,shuffled,negative,diff-in-means,mi,fisher,scale-0.5,scale-1.5,scale-2)")
    for name, text in DELEGATED_HELP.items():
        sub.add_parser(name, help=text, add_help=False)
    sub.add_parser("info", help="build, BLAS, cache locations and tasks")
    return p


def parse_task_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``["path=a.csv", "max_new_tokens=8"]`` -> ``{"path": "a.csv", "max_new_tokens": 8}``.

    A value that parses as JSON (numbers, true/false/null, lists, objects) is used as
    such; anything else is kept as a string (``template=Review: {text}``).

    Raises:
        ValueError: an item without ``=``, an empty key, or a key given twice.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--task-option {item!r} must be KEY=VALUE with KEY a keyword of the task, "
                             "e.g. --task-option path=reviews.csv")
        if key in out:
            raise ValueError(f"--task-option {key}= is given twice; give each option once")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> RunConfig:
    """A checked ``RunConfig``: ``base`` (e.g. the demo's) overridden by every option given."""
    values: dict[str, Any] = dict(base or {})
    for f in dataclasses.fields(RunConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    if getattr(args, "layers", None) is not None:
        values["layers"] = parse_layers(args.layers)
    if getattr(args, "task_option", None):
        values["task_options"] = {**dict(values.get("task_options") or {}), **parse_task_options(args.task_option)}
    if not values.get("task"):
        raise ValueError("--task is required; choose one of the tasks listed by `corrsteer info`")
    return RunConfig(**values).check()


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_headline(results: dict[str, Any]) -> str:
    """The lines ``run`` and ``demo`` print: scores, Δ with its interval, McNemar p, SER, features."""
    from corrsteer.evaluation import format_p, verdict

    b, s = results["baseline"], results["steered"]
    lo, hi = results["ci95"]
    ser = results.get("ser")
    feats = results.get("features") or []
    ftxt = "; ".join(f"L{f['layer']} {f.get('sign', '+')}#{f['index']} (r={f['r']:+.3f}, c={f['coefficient']:+.3g})"
                     for f in feats) or f"none ({(results.get('selection') or {}).get('note') or 'nothing selected'})"
    lines = [
        f"task {results.get('task')} · model {results.get('model')} · mode {results.get('mode')}",
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


def _info() -> None:
    import corrsteer
    from corrsteer.embedded import EMBEDDED, cache_dir
    from corrsteer.tasks import list_tasks

    print(f"corrsteer {corrsteer.__version__}")
    for key, value in corrsteer.build_info().items():
        print(f"  {key}: {value}")
    print(f"cache: {cache_dir()} (set CORRSTEER_CACHE to move it; gguf/ and hf/ hold the embedded models, "
          "the default SAEs are cached there too)")
    print("embedded models: " + ", ".join(sorted(EMBEDDED)))
    print("tasks: " + ", ".join(list_tasks()))


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "report":
        from corrsteer.pipeline import stage_report

        print(f"report    {stage_report(args.out or '.')}")
        return
    cfg = config_from_args(args, DEMO if args.command == "demo" else None)  # bad options fail before any import
    from corrsteer import pipeline

    if args.command in ("run", "demo"):
        results = pipeline.run(cfg)
        print(format_headline(results))
        return
    if args.command == "controls":
        from corrsteer.controls import DEFAULT_METHODS, run_controls

        methods = DEFAULT_METHODS if not args.methods else [m.strip() for m in args.methods.split(",") if m.strip()]
        doc = run_controls(cfg, methods)
        print(Path(doc["report"]).read_text())
        print(f"report    {doc['report']}")
        return
    if args.command == "eval":
        from corrsteer.selection import load_selection

        res = pipeline.load_resources(cfg, saes={})
        sel = load_selection(args.selection) if args.selection else None
        results = pipeline.stage_eval(cfg, res, sel)
        print(format_headline(results))
        return
    res = pipeline.load_resources(cfg)
    if args.command == "collect":
        col = pipeline.stage_collect(cfg, res)
        print(f"collected {col.n} samples at layers {sorted(col.accumulators)}: score {_pct(col.score)} "
              f"-> {Path(cfg.out_dir()) / 'collection'}")
    else:
        sel = pipeline.stage_select(cfg, res)
        feats = ", ".join(f"L{f.layer} {'+' if f.sign > 0 else '-'}#{f.index} (r={f.r:+.3f})" for f in sel.features)
        feats = feats or ", ".join(f"L{l} vector" for l in sorted(sel.vectors))
        how = sel.mode if sel.method == "corrsteer" else f"{sel.mode}, {sel.method}"
        print(f"selection ({how}): {feats or sel.note} -> {Path(cfg.out_dir()) / 'selection'}")
        if sel.baseline_score is not None:
            print(json.dumps({"baseline_val_score": sel.baseline_score,
                              "candidates": [[c.layer, c.sign, c.score] for c in sel.candidates]}))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corrsteer`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    n_global = 0  # global flags (-v, --debug) may stand before a delegated subcommand
    while n_global < len(argv) and argv[n_global] in GLOBAL_FLAGS:
        n_global += 1
    if n_global < len(argv) and argv[n_global] in DELEGATED:
        import importlib

        verbose = sum(GLOBAL_FLAGS[a] for a in argv[:n_global])
        if verbose:
            logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                                format="%(levelname)s %(name)s: %(message)s")
        module, func = DELEGATED[argv[n_global]]
        return int(getattr(importlib.import_module(module), func)(argv[n_global + 1:]) or 0)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "info":
        _info()
        return 0
    return report_errors(lambda: _dispatch(args), args.debug)


def report_errors(call: Callable[[], Any], debug: bool, prog: str = "corrsteer") -> int:
    """Run ``call()``: user errors print one line and give 2, library errors 1, success 0.

    With ``debug`` the exception propagates with its traceback instead.
    """
    try:
        call()
    except (ValueError, TypeError, FileNotFoundError) as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except CorrsteerError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0
