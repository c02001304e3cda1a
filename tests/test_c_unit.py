"""The pure-C unit tests (csrc/tests/*.c), plain and under ASan + UBSan, run from pytest.

Skips only when no C toolchain (make, cc) is installed; any failure of the C tests
fails here with their output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"
needs_toolchain = pytest.mark.skipif(
    shutil.which("make") is None or (shutil.which("cc") is None and shutil.which("gcc") is None),
    reason="make and a C compiler are needed for the C unit tests")
C_TESTS = sorted(p.stem for p in (CSRC / "tests").glob("test_*.c"))


def run_make(target: str, tmp_path: Path, *extra: str) -> str:
    """Run one csrc/Makefile target with its build dirs under tmp_path; return its output."""
    build = tmp_path / "build"
    cmd = ["make", "-C", str(CSRC), target, f"PYTHON={sys.executable}", f"BUILD={build}/plain",
           f"ASAN_BUILD={build}/asan", f"VALGRIND_BUILD={build}/valgrind", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MAKEFLAGS": ""})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    return out


@needs_toolchain
def test_c_unit_tests_pass_with_naive_blas(tmp_path):
    out = run_make("test", tmp_path, "BLAS=none")
    for name in C_TESTS:
        assert f"{name}: " in out, out
    assert out.count(", 0 failed") == len(C_TESTS), out


@needs_toolchain
def test_c_unit_tests_pass_with_scipy_openblas(tmp_path):
    pytest.importorskip("scipy_openblas32")
    out = run_make("test", tmp_path, "BLAS=scipy")
    assert out.count(", 0 failed") == len(C_TESTS), out


@needs_toolchain
@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_c_unit_tests_pass_with_clang(tmp_path):
    # Clang contracts a*b+c into FMAs unless told not to; the SIMD builds must still agree.
    out = run_make("test", tmp_path, "BLAS=none", "CC=clang")
    assert out.count(", 0 failed") == len(C_TESTS), out


@needs_toolchain
def test_c_unit_tests_clean_under_asan_and_ubsan(tmp_path):
    probe = subprocess.run(["cc", "-fsanitize=address,undefined", "-x", "c", "-", "-o",
                            str(tmp_path / "probe")], input="int main(void){return 0;}",
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("this compiler cannot build with -fsanitize=address,undefined")
    out = run_make("asan", tmp_path, "BLAS=none")
    assert out.count(", 0 failed") == len(C_TESTS), out


def c_sources() -> list[Path]:
    return sorted(p for p in CSRC.rglob("*") if p.suffix in (".c", ".h") and "tests" not in p.parts
                  and "build" not in p.parts)


def test_only_csrc_python_includes_python_h():
    including = {p.relative_to(CSRC).as_posix() for p in c_sources()
                 if "#include <Python.h>" in p.read_text() or "numpy/" in p.read_text()}
    assert including and all(name.startswith("python/") for name in including), including


def test_core_sources_stay_small_and_never_exit_or_print():
    import re

    for path in c_sources():
        text = path.read_text()
        assert text.count("\n") <= 450, f"{path.name} has {text.count(chr(10))} lines; split it by concept"
        if path.parent.name == "python":
            continue
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for call in ("exit", "abort", "printf", "puts", "assert"):
            assert not re.search(rf"\b{call}\s*\(", code), f"{path.name} calls {call}()"
