"""Tests for corrsteer.storage.atomic: content, replacement, cleanup on failure, permissions.

That the data is fsynced before the rename cannot be observed without a crash of the
machine, so it is not tested; what is tested is that a failure at any point inside the
``with`` body leaves the old file as it was and no temp file behind.
"""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from corrsteer.storage import atomic
from corrsteer.storage.atomic import atomic_open, write_bytes, write_json, write_text


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_creates_the_file_and_leaves_no_temp(tmp_path):
    path = write_bytes(tmp_path / "a.bin", b"\x00\x01payload")
    assert path == tmp_path / "a.bin" and path.read_bytes() == b"\x00\x01payload"
    assert _names(tmp_path) == ["a.bin"]


def test_existing_target_is_replaced(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old and longer than the new content\n")
    write_text(path, "new\n")
    assert path.read_text() == "new\n" and _names(tmp_path) == ["a.txt"]


def test_streaming_writes_land_only_on_clean_exit(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"old")
    with atomic_open(path, "wb") as fh:
        for i in range(4):
            fh.write(bytes([i]) * 1000)
            assert path.read_bytes() == b"old"  # readers see the old file while writing
        temps = [n for n in _names(tmp_path) if n != "big.bin"]
        assert len(temps) == 1 and re.fullmatch(r"\.big\.bin\.[0-9a-f]{8}\.tmp", temps[0])
    assert path.read_bytes() == b"".join(bytes([i]) * 1000 for i in range(4))
    assert _names(tmp_path) == ["big.bin"]


def test_failure_mid_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"old": 1}\n')
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(path, "w") as fh:
            fh.write('{"new": ')  # half a file written and flushed to the temp
            fh.flush()
            raise RuntimeError("boom")
    assert path.read_text() == '{"old": 1}\n' and _names(tmp_path) == ["results.json"]


def test_interrupt_mid_write_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "new.bin") as fh:
            fh.write(b"partial")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_failed_replace_removes_the_temp(tmp_path):
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep").write_text("x")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        write_bytes(target, b"data")
    assert _names(tmp_path) == ["occupied"] and _names(target) == ["keep"]


def test_text_round_trip_is_utf8_whatever_the_locale(tmp_path):
    path = write_text(tmp_path / "t.md", "Δ = +1.2 pp ✓\nline 2\n")
    assert path.read_bytes() == "Δ = +1.2 pp ✓\nline 2\n".encode("utf-8")
    write_text(path, "é", encoding="latin-1")
    assert path.read_bytes() == b"\xe9"


def test_json_round_trip_with_kwargs_and_final_newline(tmp_path):
    obj = {"delta": 0.25, "ci95": [-0.1, 0.6], "name": "Δ", "ser": None}
    path = write_json(tmp_path / "r.json", obj, indent=2, default=str)
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == obj and text.endswith("}\n") and '\n  "delta": 0.25' in text
    write_json(path, {"p": tmp_path}, default=str)  # kwargs reach json.dumps
    assert json.loads(path.read_text()) == {"p": str(tmp_path)}


def test_unserialisable_json_writes_nothing(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1} and _names(tmp_path) == ["r.json"]


def test_relative_path_is_written_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_bytes("rel.bin", b"r")
    assert (tmp_path / "rel.bin").read_bytes() == b"r" and _names(tmp_path) == ["rel.bin"]


def test_missing_folder_is_an_error_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_bytes(tmp_path / "no" / "such.bin", b"x")
    assert _names(tmp_path) == []


def test_two_writers_of_one_target_do_not_share_a_temp(tmp_path):
    path = tmp_path / "t.bin"
    with atomic_open(path) as a, atomic_open(path) as b:
        a.write(b"first")
        b.write(b"second")
    assert path.read_bytes() == b"first" and _names(tmp_path) == ["t.bin"]  # a closed last


def test_bad_mode_is_refused_before_creating_anything(tmp_path):
    for mode in ("r", "ab", "w+", "x"):
        with pytest.raises(ValueError, match="mode must be"):
            atomic_open(tmp_path / "f", mode)  # type: ignore[call-overload]
    assert _names(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_no_free_temp_name_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: "0" * (2 * n))
    (tmp_path / ".t.bin.00000000.tmp").write_bytes(b"")
    with pytest.raises(FileExistsError, match="no free temp file name"):
        write_bytes(tmp_path / "t.bin", b"x")
    assert _names(tmp_path) == [".t.bin.00000000.tmp"]
