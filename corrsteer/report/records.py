"""Generation records: the evaluated samples of a run, one JSON object per line.

A record is one test sample scored under one condition: ``id``, ``category``,
``prompt``, ``completion``, ``extracted`` (the answer parsed from the completion),
``reward`` (0 or 1), optionally ``condition`` ("baseline" | "steered") and any task
meta. :func:`write_generations_jsonl` checks and writes them atomically,
:func:`read_generations_jsonl` reads them back, and :func:`pair_records` lines up the
baseline and steered rewards of each sample for :func:`corrsteer.method.statistics.compare`.

Example:
    >>> recs = [{"id": "q1", "category": None, "prompt": "2+2?", "completion": "4",
    ...          "extracted": 4, "reward": r, "condition": c}
    ...         for c, r in (("baseline", 0), ("steered", 1))]
    >>> pair_records(recs)
    (['q1'], [None], [0], [1])
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from corrsteer.storage.atomic import write_text
from corrsteer.storage.jsonable import to_jsonable
from corrsteer.tasks.data import read_jsonl

__all__ = ["write_generations_jsonl", "read_generations_jsonl", "pair_records"]

log = logging.getLogger(__name__)

_RECORD_KEYS = ("id", "category", "prompt", "completion", "extracted", "reward")
_CONDITIONS = ("baseline", "steered")


def write_generations_jsonl(path: str | os.PathLike, records: Sequence[Mapping]) -> Path:
    """Write evaluated samples to a JSONL file atomically (:func:`corrsteer.storage.atomic.write_text`).

    Args:
        path: destination ``.jsonl``; its folder is created if missing.
        records: dicts with at least ``id, category, prompt, completion, extracted,
            reward`` (reward 0/1) and optionally ``condition`` ("baseline" | "steered")
            and task meta. NumPy scalars/arrays are converted; NaN is refused.

    Returns:
        The path written.
    """
    path = Path(path)
    lines = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise TypeError(f"records[{i}] must be a dict, got {type(rec).__name__}")
        missing = [k for k in _RECORD_KEYS if k not in rec]
        if missing:
            raise ValueError(f"records[{i}] (id={rec.get('id')!r}) lacks {missing}; a record "
                             f"needs {list(_RECORD_KEYS)}")
        if rec["reward"] not in (0, 1):  # also refuses NaN, strings, None
            raise ValueError(f"records[{i}] has reward {rec['reward']!r}; rewards are 0 or 1")
        if "condition" in rec and rec["condition"] not in _CONDITIONS:
            raise ValueError(f"records[{i}] has condition {rec['condition']!r}; "
                             f"use one of {_CONDITIONS}")
        try:
            lines.append(json.dumps(to_jsonable(dict(rec)), ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"records[{i}] (id={rec.get('id')!r}) cannot be written as JSON: "
                            f"{exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(line + "\n" for line in lines))
    log.info("wrote %d generation records to %s", len(lines), path)
    return path


def read_generations_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file written by :func:`write_generations_jsonl`.

    Args:
        path: the ``.jsonl`` file. Blank lines are skipped.

    Returns:
        The records, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not a JSON object or lacks a record key (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; it is written by `corrsteer eval` or `corrsteer run`")
    try:
        return read_jsonl(path, _RECORD_KEYS, check=False)
    except ValueError as exc:
        raise ValueError(f"{exc}; not a generations file (the file is truncated or written by something else)") \
            from exc


def pair_records(records: Sequence[Mapping]) -> tuple[list[str], list[str | None], list[int], list[int]]:
    """Pair baseline and steered records by ``id`` for :func:`corrsteer.method.statistics.compare`.

    Args:
        records: records with ``condition`` "baseline" or "steered", each id once per
            condition (order free).

    Returns:
        ``(ids, categories, baseline_rewards, steered_rewards)`` in the baseline order.
    """
    by_cond: dict[str, dict[str, Mapping]] = {c: {} for c in _CONDITIONS}
    for i, rec in enumerate(records):
        cond = rec.get("condition")
        if cond not in _CONDITIONS:
            raise ValueError(f"records[{i}] has condition {cond!r}; pairing needs "
                             f"one of {_CONDITIONS}")
        key = str(rec["id"])
        if key in by_cond[cond]:
            raise ValueError(f"id {key!r} appears twice in the {cond} records")
        by_cond[cond][key] = rec
    base, steer = by_cond["baseline"], by_cond["steered"]
    if base.keys() != steer.keys():
        only_b = sorted(base.keys() - steer.keys())[:3]
        only_s = sorted(steer.keys() - base.keys())[:3]
        raise ValueError(f"baseline and steered records cover different samples (only baseline: "
                         f"{only_b}, only steered: {only_s}); evaluate both on the same test split")
    ids = list(base)
    return (ids, [base[k].get("category") for k in ids],
            [int(base[k]["reward"]) for k in ids], [int(steer[k]["reward"]) for k in ids])
