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


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> ValueError:
    return ValueError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} of a "
                      "chunk); save the file as UTF-8")


def read_csv_rows(path: Path, needed: Iterable[str] = (), delimiter: str = ",",
                  check: bool = True) -> list[tuple[int, dict]]:
    """``(line, row)`` pairs of a CSV file with a header; ``line`` is the 1-based line the row ends on.

    Every row must have exactly as many fields as the header: a short row would leave columns
    empty (``None``) and a long one would put values under no column, so either is a ValueError
    naming the file, the line and the columns concerned. So are a field over the csv module's
    size limit (128 KiB), a NUL byte and bytes that are not UTF-8.
    """
    if check:
        verify(path)
    needed = list(needed)
    out: list[tuple[int, dict]] = []
    reader = None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            require_columns(header or [], needed, path)
            header = header or []
            for fields in reader:
                line = reader.line_num
                if not fields:
                    continue  # a blank line, as csv.DictReader skips it
                if len(fields) != len(header):
                    lost = header[len(fields):] if len(fields) < len(header) else []
                    what = f"; no value for column(s) {lost}" if lost else ""
                    raise ValueError(f"{path}:{line}: {len(fields)} fields but the header has {len(header)}"
                                     f"{what}; quote fields that contain {delimiter!r} or fix the row")
                out.append((line, dict(zip(header, fields))))
    except csv.Error as exc:
        where = f":{reader.line_num}" if reader is not None else ""
        raise ValueError(f"{path}{where}: not valid CSV ({exc})") from None
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    return out


def read_csv(path: Path, needed: Iterable[str] = (), delimiter: str = ",", check: bool = True) -> list[dict]:
    """Rows of a CSV file with a header, as dicts; see :func:`read_csv_rows` for what is refused."""
    return [row for _, row in read_csv_rows(path, needed, delimiter, check)]


def read_jsonl_rows(path: Path, needed: Iterable[str] = (), check: bool = True) -> list[tuple[int, dict]]:
    """``(line, object)`` pairs of a JSON-lines file; a malformed line or a missing key is a ValueError."""
    if check:
        verify(path)
    needed = list(needed)
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{i}: not valid JSON ({exc.msg} at column {exc.colno})") from None
                except RecursionError:
                    raise ValueError(f"{path}:{i}: JSON nested too deeply") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
                missing = [k for k in needed if k not in row]
                if missing:
                    raise ValueError(f"{path}:{i}: missing key(s) {missing}; the line has {sorted(row)}")
                rows.append((i, row))
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    return rows


def read_jsonl(path: Path, needed: Iterable[str] = (), check: bool = True) -> list[dict]:
    """Objects of a JSON-lines file; a malformed line or a missing key is a ValueError."""
    return [row for _, row in read_jsonl_rows(path, needed, check)]


def read_json_rows(path: Path, needed: Iterable[str] = ()) -> list[tuple[str, dict]]:
    """``(where, object)`` pairs of a ``.json`` file holding a list of objects (``where``: ``<path> item 3``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: a .json data file must hold a list of objects")
    for i, row in enumerate(data):
        require_columns(row, needed, f"{path} item {i}")
    return [(f"{path} item {i}", row) for i, row in enumerate(data)]


def read_table_rows(path: str | os.PathLike, needed: Iterable[str] = ()) -> list[tuple[str, dict]]:
    """``(where, row)`` pairs of a ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson`` or ``.json`` file.

    ``where`` names the file and the row, for messages: ``"<path>:8"`` (the line in a CSV, TSV
    or JSONL file) or ``"<path> item 3"`` (a ``.json`` list, 0-based).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ValueError(f"data file {path} {what}; pass path= to an existing CSV/TSV/JSONL file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return [(f"{path}:{i}", r) for i, r in read_csv_rows(path, needed, "\t" if suffix == ".tsv" else ",")]
    if suffix in (".jsonl", ".ndjson"):
        return [(f"{path}:{i}", r) for i, r in read_jsonl_rows(path, needed)]
    if suffix == ".json":
        return read_json_rows(path, needed)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl or .json")


def read_table(path: str | os.PathLike, needed: Iterable[str] = ()) -> list[dict]:
    """Rows of a ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson`` or ``.json`` (list of objects) file."""
    return [row for _, row in read_table_rows(path, needed)]


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
