"""Sequence indices of tagged rows (sae_pool_rows, Pooler.push): the binding checks every
value in its own dtype before casting to int64, so an unsigned 2**64 - 1 cannot wrap to
-1 ("skip the row") and silently drop a row.
"""

from __future__ import annotations

import numpy as np
import pytest

import corrsteer
from corrsteer.core import kernels
from corrsteer.core.kernels import _core

U64_MAX = np.uint64(2**64 - 1)


@pytest.fixture
def sae():
    eye = np.eye(4, dtype=np.float32)
    return corrsteer.SAE(eye, np.zeros(4, np.float32), eye, np.zeros(4, np.float32), architecture="relu")


def core_pool(sae, x, seq, n_seq=2):
    return _core.sae_pool_rows(kernels.sae_args(sae), x, seq, n_seq, 0)


def core_push(sae, x, seq, n_seq=2):
    pooler = _core.Pooler(kernels.sae_args(sae), n_seq, 0, 4)
    pooler.push(kernels.sae_args(sae), x, seq)
    return pooler.result(kernels.sae_args(sae))


@pytest.mark.parametrize("call", [core_pool, core_push])
@pytest.mark.parametrize("bad", [np.array([0, U64_MAX], np.uint64), np.array([0, 2**63], np.uint64),
                                 np.array([0, 2], np.uint8), np.array([0, -2], np.int64),
                                 np.array([0, 2**63 - 1], np.int64), np.array([0, -2], np.int8)])
def test_binding_refuses_out_of_range_seq_in_any_integer_dtype(sae, call, bad):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=rf"seq\[1\] = {int(bad[1])} is outside \[-1, 2\)"):
        call(sae, x, bad)


@pytest.mark.parametrize("call", [core_pool, core_push])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int32, np.int64])
def test_binding_accepts_valid_seq_in_any_integer_dtype(sae, call, dtype):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    seq = np.array([1, 0, 1], dtype)
    z, counts = call(sae, x, seq)
    want_z, want_counts = call(sae, x, seq.astype(np.int64))
    assert z.tobytes() == want_z.tobytes() and counts.tolist() == want_counts.tolist() == [1, 2]


@pytest.mark.parametrize("call", [core_pool, core_push])
def test_binding_refuses_non_integer_or_misshapen_seq(sae, call):
    x = np.ones((2, 4), np.float32)
    for bad in (np.array([0.0, 1.0]), np.array([True, False]), np.array([0, 2**64], dtype=object)):
        with pytest.raises(TypeError, match="seq must be an integer array"):
            call(sae, x, bad)
    for bad in (np.array([[0, 1]]), np.array([0, 1, 1])):
        with pytest.raises(ValueError, match="one entry per row of x"):
            call(sae, x, bad)


def test_sae_pool_rows_refuses_uint64_max(sae):
    """2**64 - 1 must be refused, not wrap to -1 (skip the row) in a cast before the check."""
    with pytest.raises(ValueError, match="18446744073709551615"):
        kernels.sae_pool_rows(sae, np.ones((2, 4), np.float32), np.array([0, U64_MAX], np.uint64), 2)


def test_pooler_push_rows_refuses_uint64_max(sae):
    pooler = corrsteer.core.Pooler(sae, 2)
    with pytest.raises(ValueError, match="18446744073709551615"):
        pooler.push_rows(np.ones((2, 4), np.float32), np.array([0, U64_MAX], np.uint64))
