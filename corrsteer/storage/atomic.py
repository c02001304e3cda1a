"""Atomic file replacement: a reader sees the old file or the new one, never a torn one.

:func:`atomic_open` yields a file object on a temp file created in the target's own
folder (so that the final rename stays on one file system). When the ``with`` body
ends normally the file is flushed, ``fsync``-ed and closed, ``os.replace``-d onto the
target (atomic on POSIX and Windows), and then the folder is ``fsync``-ed, best
effort, so that the rename itself survives a power cut. When the body raises (a
``KeyboardInterrupt`` included), the temp file is removed, the target is left as it
was, and the exception propagates. :func:`write_bytes`, :func:`write_text` and
:func:`write_json` are one-call forms; :func:`replace_dir` does the same for a whole folder
(an SAE, a converted model).

Choices, made once here for every writer in corrsteer:

- **Temp name** ``.<target name>.<8 hex>.tmp`` next to the target: hidden, easy to
  tie to its target, and unique, so two writers of the same target never share a
  temp file (each still replaces the target whole; the last one wins). A process
  killed mid-write (SIGKILL, power cut) can leave such a file behind; nothing reads it.
- **Permissions**: the temp file is created with mode ``0o666`` filtered by the
  process umask, exactly as ``open(path, "w")`` would create the target, so outputs
  are ``0644`` under the usual umask 022. (``tempfile.mkstemp``, which some writers
  used before, makes ``0600`` files that other users of a shared results folder or
  model cache cannot read.) The mode of a replaced target is not carried over, and a
  target that is a symlink is replaced by a regular file, not written through.
- **Folders** are not created: callers ``mkdir`` the parent when they mean to.
- **Text** is UTF-8 unless ``encoding`` says otherwise, whatever the locale.

Example:
    >>> from corrsteer.storage.atomic import atomic_open, write_json
    >>> with atomic_open(tmp / "big.bin") as fh:         # doctest: +SKIP
    ...     for chunk in chunks:
    ...         fh.write(chunk)
    >>> write_json(tmp / "results.json", {"delta": 0.1}, indent=2)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO, overload

__all__ = ["atomic_open", "replace_dir", "write_bytes", "write_text", "write_json"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_TRIES = 100


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    """Create and open a new, unique temp file next to the target: ``(fd, path)``."""
    for _ in range(_TRIES):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp  # the umask applies, as for open()
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name for {name!r} in {directory} after {_TRIES} tries")


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable where the platform allows it (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows, where folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@overload
def atomic_open(path: str | os.PathLike[str],
                mode: Literal["wb"] = ...) -> contextlib.AbstractContextManager[BinaryIO]: ...
@overload
def atomic_open(path: str | os.PathLike[str], mode: Literal["w"], *, encoding: str = ...,
                newline: str | None = ...) -> contextlib.AbstractContextManager[TextIO]: ...
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, encoding: str = "utf-8",
                newline: str | None = None) -> contextlib.AbstractContextManager[IO[Any]]:
    """Open a temp file that replaces ``path`` atomically when the ``with`` block ends cleanly.

    Args:
        path: the target file; its folder must exist.
        mode: ``"wb"`` (bytes) or ``"w"`` (text).
        encoding: text encoding for ``mode="w"``.
        newline: as for :func:`open`, for ``mode="w"``.

    Returns:
        A context manager yielding the open temp file. On a clean exit the file is
        flushed, fsynced and renamed onto ``path``; on an exception it is removed and
        ``path`` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    return _atomic_open(path, mode, encoding, newline)


@contextlib.contextmanager
def _atomic_open(path: str | os.PathLike[str], mode: str, encoding: str,
                 newline: str | None) -> Iterator[IO[Any]]:
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    fd, tmp = _create_temp(directory, name)
    try:
        if mode == "wb":
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Replace ``path`` with ``data`` atomically; returns ``path`` as a ``Path``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` atomically; returns ``path`` as a ``Path``."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any, **json_kwargs: Any) -> Path:
    """Replace ``path`` with ``json.dumps(obj, **json_kwargs)`` and a final newline, atomically.

    The object is serialised before the temp file is created, so an unserialisable
    object raises with nothing written.
    """
    return write_text(path, json.dumps(obj, **json_kwargs) + "\n")


@contextlib.contextmanager
def replace_dir(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Build a folder under a temp name beside ``path``; move it into place when the block ends cleanly.

    The ``with`` body writes its files into the yielded temp folder. On a clean exit the
    folder replaces ``path`` in one rename (an existing ``path`` is first renamed aside, then
    removed), so a reader sees the old folder or the new one, never a half-written one; on
    an exception the temp folder is removed and ``path`` is untouched. The parent folder is
    created when missing.

    Args:
        path: the final folder.
        overwrite: replace an existing ``path``. With False, an existing ``path`` raises
            ``FileExistsError`` before anything is written, and if another writer creates
            ``path`` while the body runs, that folder is kept and this one discarded (two
            processes filling the same cache entry).

    Yields:
        The temp folder (a ``Path``) to write into.
    """
    import shutil
    import tempfile

    target = Path(os.path.abspath(os.fspath(path)))
    if target.exists() and not overwrite:
        raise FileExistsError(f"{str(target)!r} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                return  # another writer won the race: keep its folder
            old = target.with_name(f".{target.name}.old.{secrets.token_hex(4)}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(str(target.parent))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
