"""Where the shared datasets are, and whether a file is the one its ``SHA256SUMS`` lists.

Search order for a dataset folder (first match wins):

1. the ``data_dir`` argument (a datasets root holding ``<dataset>/``, or the dataset
   folder itself); when given, nothing else is tried;
2. ``$CORRSTEER_DATA`` (same two forms);
3. ``<repo>/../shared/datasets`` where ``<repo>`` is the parent of the package folder
   (an editable install or a source checkout);
4. ``./../shared/datasets`` and ``./shared/datasets`` relative to the working directory.

A folder qualifies when it contains a file matching the dataset's marker pattern. The
error for a missing dataset lists every path tried and how to pass one. Where the
datasets root has a ``SHA256SUMS`` file, :func:`verify` checks a file against it. Used by
the tasks (:mod:`corrsteer.tasks.data`) and by the default SAEs' training text
(:mod:`corrsteer.sae.defaults`), so both find the same data the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from corrsteer.errors import CorrsteerError

logger = logging.getLogger(__name__)

__all__ = ["ENV_VAR", "candidate_roots", "dataset_dir", "verify"]

ENV_VAR = "CORRSTEER_DATA"
_VERIFIED: dict[Path, str] = {}


def candidate_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for datasets, in order (see the module docstring)."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    roots: list[Path] = []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    repo = Path(__file__).resolve().parents[2]
    roots.append(repo.parent / "shared" / "datasets")
    cwd = Path.cwd()
    roots += [cwd.parent / "shared" / "datasets", cwd / "shared" / "datasets"]
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def dataset_dir(dataset: str, marker: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Find the folder of ``dataset`` (e.g. ``"bbq"``) holding files matching ``marker``.

    Args:
        dataset: sub-folder name under a datasets root.
        marker: glob pattern relative to the dataset folder, e.g. ``"*.jsonl"``.
        data_dir: explicit root or dataset folder; None = the default search order.

    Returns:
        the dataset folder.

    Raises:
        CorrsteerError: nothing found; the message lists every path tried.
    """
    tried: list[Path] = []
    for root in candidate_roots(data_dir):
        for folder in (root / dataset, root):
            if folder in tried:
                continue
            tried.append(folder)
            if folder.is_dir() and any(folder.glob(marker)):
                logger.debug("dataset %s found at %s", dataset, folder)
                return folder
    listing = "\n  ".join(str(p) for p in tried)
    raise CorrsteerError(
        f"dataset {dataset!r} not found (looked for {marker!r} in):\n  {listing}\n"
        f"Pass data_dir='/path/to/datasets' (a folder holding {dataset}/) or set ${ENV_VAR}.")


def verify(path: Path) -> None:
    """Check ``path`` against a ``SHA256SUMS`` in its dataset root or the root's parent.

    Files not listed, or with no ``SHA256SUMS`` around, pass unchecked (user data).

    Raises:
        CorrsteerError: the file's SHA-256 differs from the listed one.
    """
    path = path.resolve()
    if path in _VERIFIED:
        return
    for root in (path.parent, path.parent.parent, path.parent.parent.parent):
        sums = root / "SHA256SUMS"
        if not sums.is_file():
            continue
        rel = "./" + path.relative_to(root).as_posix()
        expected = None
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in (rel, rel[2:]):
                expected = parts[0].lower()
        if expected is None:
            break
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise CorrsteerError(
                f"{path} does not match {sums} (sha256 {digest[:12]}... != {expected[:12]}...): "
                "the file was modified or truncated; restore it, or pass verify=False to the task "
                "to use it anyway")
        break
    _VERIFIED[path] = "ok"
