"""The ``corrsteer`` command line (also ``python -m corrsteer``): one argparse tree, the only layer that prints.

Commands, each registered by its module::

    corrsteer demo                      # embedded Gemma 3 270M + default SAEs, end to end   (cli.run)
    corrsteer run --task mmlu --mode pruned --n-train 1000 --out runs/mmlu                 (cli.run)
    corrsteer collect | select | eval | report   # the stages of `run`, one at a time       (cli.run)
    corrsteer controls --task bbq_ambig # CorrSteer vs every control and baseline, one table (cli.run)
    corrsteer labels | compare-saes ... # features per label of a labelled dataset        (cli.labels)
    corrsteer debias ...                # BBQ/EMGSD steered with pipeline or label features (cli.debias)
    corrsteer train-sae ...             # TopK SAEs on a model                              (cli.sae)
    corrsteer export --selection DIR -o steer.gguf  # a llama.cpp control vector            (cli.export)
    corrsteer lm-eval --model corrsteer ...  # lm-evaluation-harness with a selection        (cli.harness)
    corrsteer info                      # build, BLAS, caches, tasks                        (cli.info)

Exit codes and error lines: :mod:`corrsteer.cli.common`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from corrsteer.cli import debias, export, harness, info, labels, run, sae
from corrsteer.cli.common import add_global_flags, report_errors, setup_logging

__all__ = ["build_parser", "main"]

_COMMANDS = (run, labels, debias, sae, export, harness, info)


def build_parser() -> argparse.ArgumentParser:
    """The ``corrsteer`` parser with every command's subparser."""
    p = argparse.ArgumentParser(prog="corrsteer", description="Correlation-based steering of language models "
                                "with sparse-autoencoder features (CorrSteer).")
    add_global_flags(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corrsteer`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # the arguments a delegating command (lm-eval) hands on
    args.command_line = " ".join(["corrsteer", *argv])
    setup_logging(args.verbose)
    return report_errors(lambda: args.handler(args), args.debug, f"corrsteer {args.command}")
