"""Target: ``CorrelationAccumulator.from_bytes`` (the C deserialiser through the binding).

Input: byte 0 chooses whether the checksum at the end is recomputed (odd) so the mutations
reach the content checks instead of stopping at the checksum; the rest is the blob. Expected:
``FormatError`` (a ``ValueError``). A blob that loads must save to the same bytes, and give
finite correlations in [-1, 1].
"""

from __future__ import annotations

import struct

import numpy as np
from harness import fnv1a64, instrumented, main

with instrumented():
    from corrsteer.core import CorrelationAccumulator, FormatError


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    blob = data[1:]
    if data[0] & 1 and len(blob) >= 8:
        blob = blob[:-8] + struct.pack("<Q", fnv1a64(blob[:-8]))
    try:
        acc = CorrelationAccumulator.from_bytes(blob)
    except FormatError:
        return
    assert acc.to_bytes() == blob, "a state that loads must save to the same bytes"
    r = acc.correlation()
    assert r.shape == (acc.d_sae,) and np.all(np.isfinite(r)) and np.all(np.abs(r) <= 1.0 + 1e-9), r
    acc.top(min(3, acc.d_sae), "positive")
    acc.top(min(3, acc.d_sae), "negative")
    acc.coefficient(active_only=True)
    acc.frequency()


if __name__ == "__main__":
    main(TestOneInput)
