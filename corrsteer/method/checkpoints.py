"""What a collection is and how it is kept on disk: :class:`Collection`, its fingerprint, checkpoints.

A collection is folded window by window (``checkpoint_every`` samples, METHOD.md §4):
each window fills fresh accumulators, which are then merged into the total in window
order (:mod:`corrsteer.method.collection`). Two kinds of file hold that progress, both
``.npz`` archives written in one atomic replace:

- ``<out>/collection/checkpoint.npz``: the total of the first windows (all of them once
  the collection is complete): accumulator bytes per layer (``layer_<L>``), the progress
  JSON (offset, records so far, the run's fingerprint, meta) and the controls' state;
- ``<out>/collection/windows/window_<j>.npz``: one finished window on its own, written by
  the rank that collected it when several ranks share the work; removed once
  ``checkpoint.npz`` holds the finished collection.

A file whose fingerprint differs from the run's is refused on resume.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer.config import fingerprint
from corrsteer.core import CorrelationAccumulator
from corrsteer.errors import CorrsteerError
from corrsteer.method.control_state import KINDS, ControlState
from corrsteer.models import model_id
from corrsteer.storage import atomic

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FILE", "COLLECTION_DIR", "Collection", "RECORDS_FILE", "WINDOWS_DIR", "checkpoint_bytes",
           "fold", "load_checkpoint", "load_collection", "read_checkpoint", "remove_stale_temps", "run_fingerprint", "sae_digest",
           "save_checkpoint", "window_files", "window_path"]

COLLECTION_DIR = "collection"
CHECKPOINT_FILE = "checkpoint.npz"
RECORDS_FILE = "records.jsonl"
WINDOWS_DIR = "windows"
ACCUMULATION = "windows"  # how the accumulators are folded (in the fingerprint: older checkpoints differ)


@dataclass
class Collection:
    """What a collection pass produced (or one window of it)."""

    accumulators: dict[int, Any]  # layer -> CorrelationAccumulator
    records: list[dict[str, Any]]  # per training sample: id, category, completion, extracted, reward
    fingerprint: dict[str, Any]  # what the accumulators depend on (compared on resume)
    complete: bool = True  # every sample folded in
    seconds: float = 0.0  # wall time of this process's share of the pass
    meta: dict[str, Any] = field(default_factory=dict)  # pool, positions, layers, n (a window: its index and span)
    controls: ControlState | None = None  # extra state for controls/baselines (collect(controls=True))

    @property
    def n(self) -> int:
        """Samples folded in so far."""
        return len(self.records)

    @property
    def score(self) -> float:
        """Mean reward over the collected samples (nan when none)."""
        return float(np.mean([r["reward"] for r in self.records])) if self.records else float("nan")


def fold(total: Collection, window: Collection) -> None:
    """Merge ``window`` (the next window, fresh accumulators) into ``total``, in place."""
    for layer, acc in total.accumulators.items():
        acc.merge(window.accumulators[layer])
    total.records.extend(window.records)
    if total.controls is not None:
        if window.controls is None:
            raise CorrsteerError("a window without the controls' state cannot be folded into a controls collection")
        if window.controls.draws != total.controls.draws:
            raise CorrsteerError(f"a window with {window.controls.draws} shuffled-reward draws cannot be folded into "
                                 f"a collection with {total.controls.draws}")
        for kind in KINDS:
            for layer, acc in getattr(total.controls, kind).items():
                acc.merge(getattr(window.controls, kind)[layer])
        for mine, theirs in zip(total.controls.shuffled, window.controls.shuffled):
            for layer, acc in mine.items():
                acc.merge(theirs[layer])
        total.controls.offset = window.controls.offset


def sae_digest(sae: Any) -> str:
    """Short hash of an SAE's weights, to recognise the same SAE across runs."""
    h = hashlib.blake2b(digest_size=8)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        value = getattr(sae, name, None)
        if value is not None:
            h.update(np.ascontiguousarray(value).tobytes())
    h.update(f"{getattr(sae, 'architecture', '')}:{getattr(sae, 'k', '')}".encode())
    return h.hexdigest()


def run_fingerprint(model: Any, task: Any, saes: Mapping[int, Any], samples: Sequence[Any], pool: str,
                    positions: str, batch_size: int, max_new_tokens: int, checkpoint_every: int) -> dict[str, Any]:
    """Everything a collection's result depends on, as a JSON-ready dict."""
    ids = hashlib.sha256("\n".join(s.id for s in samples).encode()).hexdigest()[:16]
    return {"task": task.name, "model": model_id(model), "saes": {str(l): sae_digest(saes[l]) for l in sorted(saes)},
            "n": len(samples), "sample_ids": ids, "pool": pool, "positions": positions, "batch_size": batch_size,
            "max_new_tokens": max_new_tokens, "stop_strings": list(task.stop_strings),
            "checkpoint_every": checkpoint_every, "accumulation": ACCUMULATION}


def checkpoint_bytes(col: Collection, offset: int) -> bytes:
    """The ``.npz`` bytes of a checkpoint: accumulators + progress (+ the controls' state)."""
    progress = {"offset": offset, "complete": col.complete, "fingerprint": col.fingerprint,
                "hash": fingerprint(col.fingerprint), "records": col.records, "meta": col.meta}
    arrays = {"progress": np.frombuffer(json.dumps(progress).encode(), dtype=np.uint8)}
    for layer, acc in col.accumulators.items():
        arrays[f"layer_{layer}"] = np.frombuffer(acc.to_bytes(), dtype=np.uint8)
    if col.controls is not None:
        arrays.update(col.controls.to_arrays())
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_checkpoint(path: Path, col: Collection, offset: int) -> None:
    """Write accumulators + progress to ``path`` in one atomic replace (temp file + rename)."""
    atomic.write_bytes(path, checkpoint_bytes(col, offset))


def read_checkpoint(blob: bytes, name: str) -> tuple[Collection, int]:
    """:func:`load_checkpoint` from the file's bytes (``name`` labels the errors)."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            progress = json.loads(data["progress"].tobytes().decode())
            accs = {int(k[6:]): CorrelationAccumulator.from_bytes(data[k].tobytes())
                    for k in data.files if k.startswith("layer_")}
            controls = ControlState.from_arrays({k: data[k] for k in data.files if k.startswith("control_")})
        col = Collection(accumulators=accs, records=progress["records"], fingerprint=progress["fingerprint"],
                         complete=bool(progress["complete"]), meta=progress.get("meta", {}), controls=controls)
        offset = int(progress["offset"])
    except Exception as exc:  # noqa: BLE001 - corrupt bytes reach zipfile, zlib, json and the core in many ways
        # The catch is broad on purpose. Besides OSError, ValueError and KeyError, fuzzing found corrupt files
        # that raise NotImplementedError (a zip member with an unknown compression method).
        raise CorrsteerError(f"collection checkpoint {name!r} is unreadable or corrupt ({exc}); "
                             "delete it and collect again without --resume") from exc
    if offset != len(col.records):
        raise CorrsteerError(f"collection checkpoint {name!r} is inconsistent (offset {offset}, "
                             f"{len(col.records)} records); delete it and collect again")
    return col, offset


def remove_stale_temps(path: Path, any_window: bool = False) -> list[Path]:
    """Remove the temp files (``.<name>.<8 hex>.tmp``) that writes of ``path`` killed mid-way left behind.

    :mod:`corrsteer.storage.atomic` writes a checkpoint to such a temp file and renames it onto
    ``path``; a SIGKILL or power cut between the two leaves the temp file, which nothing reads. A
    collection removes them when it starts, before any of its ranks writes; it is the only writer
    of its folder (a second collection into the same folder at the same time is not supported).
    ``any_window``: ``path`` is a window file, and the temp files of every window file go.

    Returns:
        The files removed.
    """
    name = re.escape(path.name) if not any_window else r"window_\d+\.npz"
    pattern = f".{glob.escape(path.name)}.*.tmp" if not any_window else ".window_*.npz.*.tmp"
    removed = []
    for tmp in path.parent.glob(pattern) if path.parent.is_dir() else ():
        if re.fullmatch(rf"\.{name}\.[0-9a-f]{{8}}\.tmp", tmp.name) and tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    if removed:
        log.warning("removed %d temp file(s) of an interrupted checkpoint write: %s", len(removed),
                    ", ".join(str(t) for t in removed))
    return removed


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Collection, int]:
    """Read a checkpoint written by ``save_checkpoint``.

    Returns:
        ``(collection, offset)``: the accumulators and records so far, and the next sample offset
        (a window file: its number of samples).

    Raises:
        CorrsteerError: the file is unreadable or corrupt (the message names it).
    """
    try:
        blob = Path(path).read_bytes()  # np.load on a path leaks the handle when the zip is corrupt
    except OSError as exc:
        raise CorrsteerError(f"collection checkpoint {str(path)!r} is unreadable or corrupt ({exc}); "
                             "delete it and collect again without --resume") from exc
    return read_checkpoint(blob, str(path))


def load_collection(out_dir: str | os.PathLike[str]) -> Collection:
    """The finished collection of a run folder (``<out_dir>/collection/checkpoint.npz``).

    Raises:
        ValueError: no checkpoint there, or the collection did not finish (resume it first).
    """
    path = Path(out_dir) / COLLECTION_DIR / CHECKPOINT_FILE
    if not path.is_file():
        raise ValueError(f"no collection in {str(out_dir)!r} (missing {str(path)!r}); run `corrsteer collect` first")
    col, offset = load_checkpoint(path)
    if not col.complete:
        raise ValueError(f"the collection in {str(out_dir)!r} stopped at sample {offset} of "
                         f"{col.fingerprint.get('n')}; finish it with `corrsteer collect --resume`")
    return col


def window_path(collection_dir: Path, j: int) -> Path:
    """The file of window ``j`` under ``<out>/collection``."""
    return collection_dir / WINDOWS_DIR / f"window_{j:06d}.npz"


def window_files(collection_dir: Path) -> dict[int, Path]:
    """``{j: path}`` of the window files present (temporary files of an interrupted write excluded)."""
    folder = collection_dir / WINDOWS_DIR
    found = {}
    for path in folder.glob("window_*.npz") if folder.is_dir() else ():
        stem = path.stem[len("window_"):]
        if stem.isdigit():
            found[int(stem)] = path
    return dict(sorted(found.items()))


def mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``key: checkpoint ..., now ...`` for every key that differs."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}" for k in keys)


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """``records.jsonl``: one JSON line per training sample."""
    with atomic.atomic_open(path, "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
