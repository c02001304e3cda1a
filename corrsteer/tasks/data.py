"""Reading benchmark data files (read-only; nothing is copied).

Where the files are, and their check against ``SHA256SUMS``, is
:mod:`corrsteer.storage.datasets` (shared with the default SAEs' training text); the
files a task reads are checked against it.

The Hugging Face hub is an optional fallback (:func:`hf_rows`): it needs the
``datasets`` package and network access, and says so cleanly when either is missing.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from corrsteer.errors import CorrsteerError
from corrsteer.storage import datasets
from corrsteer.storage.datasets import verify

logger = logging.getLogger(__name__)


def dataset_dir(dataset: str, marker: str, data_dir: str | os.PathLike | None = None) -> Path:
    """:func:`corrsteer.storage.datasets.dataset_dir`, whose error also says whether the hub can help."""
    try:
        return datasets.dataset_dir(dataset, marker, data_dir)
    except CorrsteerError as exc:
        raise CorrsteerError(f"{exc} Hub fallback: {hf_status()}") from None


def require_columns(columns: Iterable[str], needed: Iterable[str], path: Path | str) -> None:
    """Raise ValueError naming ``path`` and the missing columns, if any of ``needed`` is absent."""
    have = list(columns)
    missing = [c for c in needed if c not in have]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; the file has {have}")


def read_csv(path: Path, needed: Iterable[str] = (), delimiter: str = ",", check: bool = True) -> list[dict]:
    """Rows of a CSV file with a header, as dicts; missing columns are a ValueError."""
    if check:
        verify(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        require_columns(reader.fieldnames or [], needed, path)
        return list(reader)


def read_jsonl(path: Path, needed: Iterable[str] = (), check: bool = True) -> list[dict]:
    """Objects of a JSON-lines file; a malformed line or a missing key is a ValueError."""
    if check:
        verify(path)
    needed = list(needed)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in needed if k not in row]
            if missing:
                raise ValueError(f"{path}:{i}: missing key(s) {missing}; the line has {sorted(row)}")
            rows.append(row)
    return rows


def read_table(path: str | os.PathLike, needed: Iterable[str] = ()) -> list[dict]:
    """Rows of a ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson`` or ``.json`` (list of objects) file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"data file {path} does not exist; pass path= to an existing CSV/TSV/JSONL file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path, needed)
    if suffix == ".tsv":
        return read_csv(path, needed, delimiter="\t")
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path, needed)
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path}: a .json data file must hold a list of objects")
        for i, row in enumerate(data):
            require_columns(row, needed, f"{path}[{i}]")
        return data
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl or .json")


def hf_available() -> bool:
    """Whether the optional Hugging Face ``datasets`` package is importable."""
    return importlib.util.find_spec("datasets") is not None


def hf_status() -> str:
    """One line saying whether the hub fallback can be used, and why not."""
    if not hf_available():
        return "not available (the `datasets` package is not installed: pip install datasets)"
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return "not available (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)"
    return "available (the `datasets` package is installed; needs network access)"


def hf_rows(hub_id: str, split: str, config: str | None = None) -> list[dict]:
    """Rows of a hub dataset split via ``datasets.load_dataset``.

    Raises:
        CorrsteerError: the package is missing, the hub is switched off, or loading failed.
    """
    status = hf_status()
    if not status.startswith("available"):
        raise CorrsteerError(f"cannot load {hub_id!r} from the Hugging Face hub: {status}")
    import datasets  # optional dependency, imported only on this path

    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # network, auth or naming problems from a third-party package
        raise CorrsteerError(f"loading {hub_id!r} ({config}, {split}) from the hub failed: {exc}; "
                             "pass data_dir= to local files instead") from exc
    return [dict(row) for row in ds]
