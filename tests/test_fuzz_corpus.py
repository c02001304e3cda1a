"""Replay every fuzz target's committed corpus and regressions through its ``TestOneInput`` (no atheris).

``fuzz/corpus/<target>/`` holds the seeds (``fuzz/seed.py``); ``fuzz/regressions/<target>/``
holds inputs that once crashed a target or gave a wrong answer, kept so the fix stays fixed.
A target returns normally for every input corrsteer handles as documented (fuzz/README.md).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = sorted(p.stem[len("fuzz_"):] for p in FUZZ.glob("fuzz_*.py"))


def _inputs() -> list[tuple[str, Path]]:
    return [(t, f) for t in TARGETS for kind in ("corpus", "regressions")
            for f in sorted((FUZZ / kind / t).glob("*")) if f.is_file()]


@pytest.fixture(scope="module", autouse=True)
def fuzz_on_path():
    sys.path.insert(0, str(FUZZ))
    yield
    sys.path.remove(str(FUZZ))


def test_every_target_has_a_corpus() -> None:
    assert TARGETS, FUZZ
    for target in TARGETS:
        assert any((FUZZ / "corpus" / target).glob("*")), f"fuzz/corpus/{target}/ is empty: run fuzz/seed.py"


@pytest.mark.parametrize("target, path", _inputs(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_fuzz_input_is_handled(target: str, path: Path) -> None:
    module = importlib.import_module(f"fuzz_{target}")
    with warnings.catch_warnings():  # as under the fuzzer: a degenerate-rewards warning is an answer
        warnings.simplefilter("ignore")
        module.TestOneInput(path.read_bytes())
