"""What the fuzz targets share: a private temp folder, atheris when fuzzing, plain Python otherwise.

A target is a module ``fuzz/fuzz_<name>.py`` with ``TestOneInput(data: bytes) -> None`` that
returns normally for every input corrsteer handles as it should (a result, or one of the
exceptions it documents) and raises or asserts otherwise. ``fuzz/run.sh`` runs each under
atheris (libFuzzer); ``tests/test_fuzz_corpus.py`` replays every committed corpus file and
regression through the same function without atheris.

Every file a target writes goes under :data:`TMP`, a folder made for the process under the
system temp directory and removed when it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="corrsteer-fuzz-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
warnings.simplefilter("ignore")  # a degenerate-rewards warning is an answer, not a finding


def fuzzing() -> bool:
    """True when run by fuzz/run.sh (``CORRSTEER_FUZZ=1``): instrument corrsteer's bytecode for atheris."""
    return os.environ.get("CORRSTEER_FUZZ") == "1"


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """Wrap a target's corrsteer imports: atheris instruments them when fuzzing, nothing happens otherwise."""
    if fuzzing():
        import atheris

        with atheris.instrument_imports(include=["corrsteer"]):
            # corrsteer/__init__ imports lazily: bring in what the targets reach, so that it is
            # instrumented too (a module first imported outside this block is not)
            import corrsteer.sae.formats  # noqa: F401
            import corrsteer.sae.model  # noqa: F401
            import corrsteer.storage.safetensors  # noqa: F401
            import corrsteer.tasks.custom  # noqa: F401
            yield
    else:
        yield


def write(name: str, data: bytes) -> Path:
    """Write ``data`` to ``TMP/name`` (folders created) and return the path."""
    path = TMP / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fnv1a64(data: bytes) -> int:
    """The accumulator's checksum (csrc/corr_io.c), so a target can make altered bytes pass it."""
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Fuzz ``test_one_input`` with atheris, passing the command line on to libFuzzer."""
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


class Reader:
    """Structured values from fuzz bytes (a small, atheris-free FuzzedDataProvider); 0s once they run out."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0
        self.wild = False  # whether floats() has returned arbitrary bit patterns

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out + bytes(n - len(out))

    def int(self, lo: int, hi: int) -> int:
        """An int in [lo, hi]."""
        return lo + int.from_bytes(self.bytes(2), "little") % (hi - lo + 1)

    def floats(self, n: int) -> list[float]:
        """``n`` float32 values: small dyadic numbers mostly, any bit pattern (NaN, inf) when asked for."""
        import numpy as np

        raw = np.frombuffer(self.bytes(4 * n), dtype=np.uint32)
        wild = np.frombuffer(self.bytes(4 * n), dtype=np.float32) if self.int(0, 7) == 0 else None
        tame = ((raw % 257).astype(np.float32) - 128) / 32  # multiples of 1/32 in [-4, 4]: exact sums
        self.wild = self.wild or (wild is not None and n > 0)
        return list(wild if wild is not None else tame)
