"""What every ``corrsteer`` command shares: options generated from RunConfig, logging, exit codes.

Exit codes, the same for every command, decided in one place (:func:`report_errors`) by the
exception's type:

- 0: done;
- 2: the user's input or environment is wrong (``ValueError``, ``TypeError``, ``OSError``): a bad
  option or value, an unknown task, ``--n-train`` larger than the split, a missing file or
  folder, a data file with a bad row, non-UTF-8 text or bad JSON, a resume with other settings,
  an output path that is a file, a folder that cannot be written, a full disk; argparse's own
  usage errors exit 2 too;
- 1: corrsteer could not do its work with inputs that passed those checks
  (:class:`~corrsteer.errors.CorrsteerError`): a checkpoint or SAE file whose bytes are corrupt
  or do not form a valid SAE, a dataset not found in the default places or failing its
  checksum, a model whose layers cannot be found, an unreachable hub; and any other exception
  (a bug: the line says so, and ``--debug`` shows the traceback to report);
- 130: interrupted (Ctrl-C); the last checkpoint is intact.

Errors print one ``corrsteer <command>: error: ...`` line on stderr; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from corrsteer.config import RunConfig
from corrsteer.errors import CorrsteerError

__all__ = ["EXIT_INTERRUPTED", "EXIT_LIBRARY", "EXIT_USER", "add_config_options", "add_global_flags",
           "config_from_args", "describe_os_error", "parse_layers", "parse_task_options", "report_errors",
           "setup_logging"]

EXIT_LIBRARY, EXIT_USER, EXIT_INTERRUPTED = 1, 2, 130


def add_global_flags(p: argparse.ArgumentParser, top: bool) -> None:
    """``-v``/``--verbose`` and ``--debug``, accepted before and after the command name."""
    default: Any = 0 if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="count", default=default, help="log progress (-vv: debug)")
    p.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="show tracebacks instead of one-line errors")


def setup_logging(verbose: int) -> None:
    """The one logging set-up of the command line: warnings by default, -v info, -vv debug."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(int(verbose), 2)],
                        format="%(levelname)s %(name)s: %(message)s")


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


_SINGULAR = {"task_options": "task-option"}  # a repeatable option is named for one of its items


def _scale(text: str) -> float | str:
    """``--scale``: a number, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None


def _floats(text: str) -> tuple[float, ...]:
    """``--scale-grid 0.5,1,2``."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers, e.g. 0.5,1,2") from None


# fields whose option parses its own text (layers: parse_layers in config_from_args)
_PARSERS: dict[str, Any] = {"layers": str, "scale": _scale, "scale_grid": _floats}
_TYPES = {int: int, float: float, str: str}


def add_config_options(p: argparse.ArgumentParser, base: dict[str, Any] | None = None) -> None:
    """One option per ``RunConfig`` field, generated from the field (help, type, default).

    Every option defaults to None (``argparse.SUPPRESS`` semantics by hand), so that
    :func:`config_from_args` can tell a given option from the field's default.

    Args:
        p: the subcommand's parser.
        base: defaults that replace RunConfig's in the help (the demo's).
    """
    g = p.add_argument_group("run options (RunConfig)")
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        meta = dict(f.metadata)
        default = (base or {}).get(f.name, f.default if f.default is not dataclasses.MISSING else {})
        choices = meta.get("choices")
        text = meta.get("help", "").replace("%", "%%")  # argparse formats help with %
        if choices:
            text += f": {' | '.join(choices)}"
        flag = "--" + _SINGULAR.get(f.name, f.name).replace("_", "-")
        hint = hints[f.name]
        if hint is bool or hint == bool:
            if default:
                g.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false", default=None,
                               help=f"do not {text}" if not text.startswith("show") else f"do not {text}")
            else:
                g.add_argument(flag, dest=f.name, action="store_true", default=None, help=text)
            continue
        if f.name == "task_options":
            g.add_argument(flag, dest=f.name, action="append", default=None, metavar=meta.get("metavar"), help=text)
            continue
        base_type = next((t for t in typing.get_args(hint) or (hint,) if t in _TYPES), str)
        kind = _PARSERS.get(f.name, _TYPES[base_type])
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        shown = "" if default in (None, {}) else f" ({shown})"
        g.add_argument(flag, dest=f.name, type=kind, default=None, help=text + shown)


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> RunConfig:
    """A checked ``RunConfig``: ``base`` (e.g. the demo's) overridden by every option given."""
    values: dict[str, Any] = dict(base or {})
    for f in dataclasses.fields(RunConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    if getattr(args, "layers", None) is not None:
        values["layers"] = parse_layers(args.layers)
    if getattr(args, "task_options", None):
        values["task_options"] = {**dict((base or {}).get("task_options") or {}),
                                  **parse_task_options(args.task_options)}
    if not values.get("task"):
        raise ValueError("--task is required; choose one of the tasks listed by `corrsteer info`")
    return RunConfig(**values).check()


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``: the file, what went wrong, and what to do when it is the disk."""
    path = f"{exc.filename!s}: " if exc.filename is not None else ""
    text = f"{path}{exc.strerror}" if exc.strerror else str(exc)
    hint = {errno.ENOSPC: "; free some space or pass another --out",
            errno.EDQUOT: "; free some space or pass another --out",
            errno.EROFS: "; the file system is read-only: pass another --out",
            errno.EACCES: "; check the permissions or pass another --out"}.get(exc.errno or 0, "")
    return text + hint


def report_errors(call: Callable[[], Any], debug: bool, prog: str = "corrsteer") -> int:
    """Run ``call()`` under the exit-code policy of the module docstring; returns the exit status.

    With ``debug`` the exception propagates with its traceback instead.
    """
    try:
        status = call()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last checkpoint is intact (rerun with --resume to continue)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if debug:
            raise
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USER
    except (ValueError, TypeError) as exc:  # FormatError (corrupt bytes) is a ValueError too
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except CorrsteerError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_LIBRARY
    except Exception as exc:  # a bug: one line by default, the traceback with --debug
        if debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback and "
              "report it)", file=sys.stderr)
        return EXIT_LIBRARY
    return int(status or 0)
