"""``corrsteer lm-eval``: lm-evaluation-harness's command line, with the ``corrsteer`` model registered.

lm-eval 0.4 finds third-party models only when something imports them first; this command
imports :mod:`corrsteer.integrations.lm_harness` (which registers ``--model corrsteer``) and
then runs lm-eval's own command line with every argument after ``lm-eval``, unchanged.

Example::

    corrsteer lm-eval --model corrsteer \\
        --model_args pretrained=gemma-3-270m,selection=runs/sst2-all-seed0/selection \\
        --tasks sst2_local --include_path scripts/lm_eval_tasks --device cpu --batch_size 16
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


TEXT = "run lm-evaluation-harness with `--model corrsteer` available (arguments go to lm-eval)"
INSTALL = "pip install 'corrsteer[lmeval]' (or: bash scripts/install_extras.sh lmeval)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``lm-eval`` to the ``corrsteer`` parser; its arguments all go to lm-eval."""
    p = sub.add_parser("lm-eval", help=TEXT, description=TEXT, add_help=False, allow_abbrev=False)
    p.set_defaults(handler=_lm_eval, passthrough=True)


def _lm_eval(args: argparse.Namespace) -> int:
    if args.extra in (["-h"], ["--help"]):
        _help()
    try:
        import corrsteer.integrations.lm_harness  # noqa: F401 - registers --model corrsteer
        from lm_eval.__main__ import cli_evaluate
    except ImportError as exc:
        raise ValueError(f"{exc}; install the extra: {INSTALL}") from exc
    saved = sys.argv
    sys.argv = ["lm-eval", *args.extra]
    try:
        cli_evaluate()
    except SystemExit as exc:  # argparse's usage errors and --help
        return exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.argv = saved
    return 0


def _help() -> None:
    """corrsteer's usage line, then lm-eval's own help (or how to install it); exits 0 like argparse's --help."""
    print(f"usage: corrsteer lm-eval [lm-eval arguments ...]\n\n{TEXT}; --model_args of the corrsteer model: "
          "pretrained=MODEL,selection=DIR|vector=FILE.gguf[,scale=S][,positions=generation|all]\n")
    sys.stdout.flush()
    try:
        import corrsteer.integrations.lm_harness  # noqa: F401
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        print(f"lm-eval is not installed: {INSTALL}")
        raise SystemExit(0) from None
    saved = sys.argv
    sys.argv = ["lm-eval", "--help"]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    raise SystemExit(0)
