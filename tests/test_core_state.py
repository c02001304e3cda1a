"""The accumulator's state stays loadable: forged bytes with a valid checksum but an
impossible state are refused with a reason, and an update racing a thread that writes
NaN into z cannot poison the state (the core validates a private copy of z).
"""

from __future__ import annotations

import struct
import threading
import time

import numpy as np
import pytest

from corrsteer.core import CorrelationAccumulator
from corrsteer.core.kernels import _core

N_OFF, N_POS_OFF, MEAN_Y_OFF, M2_Y_OFF, BODY_OFF = 24, 32, 40, 48, 56
ARRAYS = ("mean", "m2", "mean_pos", "n_active", "n_pos_active", "c_zy")


def fnv1a64(data: bytes) -> int:
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def forge(data: bytes, edits: dict[int, float]) -> bytes:
    """data with the float64 at each offset replaced, and a valid checksum."""
    b = bytearray(data)
    for off, value in edits.items():
        b[off:off + 8] = struct.pack("<d", value)
    b[-8:] = struct.pack("<Q", fnv1a64(bytes(b[:-8])))
    return bytes(b)


def arr_off(d_sae: int, name: str, j: int) -> int:
    return BODY_OFF + 8 * (ARRAYS.index(name) * d_sae + j)


@pytest.fixture(scope="module")
def binary_bytes():
    rng = np.random.default_rng(5)
    y = (rng.random(200) < 0.4).astype(np.float64)
    z = np.maximum(rng.standard_normal((200, 6)) + y[:, None], 0).astype(np.float32)
    acc = CorrelationAccumulator(6)
    acc.update(z, y)
    return acc.to_bytes()


def test_forged_m2_y_of_zero_is_refused_not_turned_into_r_of_one(binary_bytes):
    bad = forge(binary_bytes, {M2_Y_OFF: 0.0})
    with pytest.raises(_core.FormatError, match=r"internally inconsistent: m2_y = 0 but rewards with "
                                                r"n_pos = \d+ of n = 200 give [0-9.]+"):
        CorrelationAccumulator.from_bytes(bad)


@pytest.mark.parametrize("edit,match", [
    (lambda d, n: {N_POS_OFF: n + 1}, r"n_pos = 201 is not a count in \[0, n = 200\]"),
    (lambda d, n: {MEAN_Y_OFF: 0.99}, r"mean_y = 0.99 but n_pos / n = "),
    (lambda d, n: {N_OFF: 0.0, N_POS_OFF: 0.0}, r"n = 0 but"),
    (lambda d, n: {arr_off(d, "n_active", 1): n + 3}, r"n_active\[1\] = 203 is not a count"),
    (lambda d, n: {arr_off(d, "n_pos_active", 1): n}, r"n_pos_active\[1\] = 200 is not in \[0, min"),
    (lambda d, n: {arr_off(d, "m2", 2): -0.5}, r"m2\[2\] = -0.5 is not in"),
    (lambda d, n: {arr_off(d, "mean", 3): float("nan")}, r"mean\[3\] = nan is not finite"),
    (lambda d, n: {arr_off(d, "c_zy", 0): 1e9}, r"c_zy\[0\] = 1000000000 exceeds sqrt\(m2\[0\] m2_y\)"),
    (lambda d, n: {arr_off(d, "mean_pos", 0): 50.0}, r"c_zy\[0\] = .* but n_pos \(mean_pos - mean\)"),
])
def test_forged_states_are_refused_with_the_field_named(binary_bytes, edit, match):
    with pytest.raises(_core.FormatError, match=match):
        CorrelationAccumulator.from_bytes(forge(binary_bytes, edit(6, 200)))


def test_header_errors_say_what_is_wrong(binary_bytes):
    with pytest.raises(_core.FormatError, match=r"wrong size .*: 100 bytes, but an accumulator with d_sae = 6"):
        CorrelationAccumulator.from_bytes(binary_bytes[:100])
    assert CorrelationAccumulator.from_bytes(binary_bytes).to_bytes() == binary_bytes


def test_update_racing_a_nan_writer_never_poisons_the_state():
    """A thread toggles z[-1, -1] between NaN and 1 while updates run with the GIL
    released. Each update must either refuse the batch (it saw the NaN) or fold in
    finite values only; the state must stay finite and loadable throughout. Before the
    core validated a private copy, the finiteness pre-check could read 1 and the
    reduction NaN, and the saved state no longer loaded."""
    rng = np.random.default_rng(9)
    n, d = 512, 2048
    z = np.maximum(rng.standard_normal((n, d)), 0).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.float64)
    acc = CorrelationAccumulator(d)
    stop = threading.Event()

    def writer():
        row = z[-1]
        while not stop.is_set():
            row[-1] = np.nan
            row[-1] = 1.0

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    accepted = refused = 0
    deadline = time.monotonic() + 120  # only catches a hang; the loop ends on the count
    try:
        for _ in range(300):
            if time.monotonic() > deadline:
                break
            try:
                acc.update(z, y)
                accepted += 1
            except ValueError:
                refused += 1
            data = acc.to_bytes()  # refuses (CorrsteerError) rather than write unloadable bytes
            back = CorrelationAccumulator.from_bytes(data)
            assert back.n == acc.n == accepted * n
            if accepted:  # (an empty accumulator warns that r is undefined)
                r = acc.correlation()
                assert np.isfinite(r).all(), f"NaN in r after {accepted} updates ({refused} refused)"
    finally:
        stop.set()
        t.join()
    assert accepted + refused > 0
