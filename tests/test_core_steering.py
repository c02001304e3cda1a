"""Steering deltas (C core) against the twin: steering_vector and add_to_rows.

Both sides accumulate Σ c_k · W_dec[f_k] in float64 and round once to float32, so
they agree to float32 rounding (rtol 1e-6 relative to Σ|c_k|·|W_dec[f_k]|).
"""

from __future__ import annotations

import numpy as np
import pytest

import corrsteer
from corrsteer.core import kernels, reference


@pytest.mark.parametrize("d_sae,d_in,n_feat", [(1, 1, 1), (37, 16, 3), (4099, 640, 12), (100, 2304, 0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_steering_vector_matches_reference(d_sae, d_in, n_feat, seed):
    rng = np.random.default_rng(seed)
    W_dec = rng.standard_normal((d_sae, d_in)).astype(np.float32)
    features = rng.integers(0, d_sae, n_feat)
    coefficients = rng.standard_normal(n_feat) * 10
    v = corrsteer.core.steering_vector(W_dec, features, coefficients)
    assert v.dtype == np.float32 and v.shape == (d_in,)
    scale = np.abs(coefficients) @ np.abs(W_dec[features].astype(np.float64)) if n_feat else np.zeros(d_in)
    assert np.all(np.abs(v - reference.steering_vector(W_dec, features, coefficients)) <= 1e-6 * scale), \
        f"d_sae={d_sae} d_in={d_in} n_feat={n_feat} seed={seed}"


def test_steering_vector_duplicates_add_and_negatives_subtract():
    W_dec = np.arange(12, dtype=np.float32).reshape(4, 3)
    v = corrsteer.core.steering_vector(W_dec, np.array([1, 1, 3]), np.array([0.5, 0.5, -2.0]))
    np.testing.assert_array_equal(v, W_dec[1] - 2 * W_dec[3])
    v = corrsteer.core.steering_vector(W_dec, np.array([2], np.int32), np.array([1], np.int64))
    np.testing.assert_array_equal(v, W_dec[2])


def test_steering_vector_accumulates_in_float64():
    """1e8 + 1 - 1e8 in float32 loses the 1; float64 accumulation keeps it."""
    W_dec = np.ones((3, 2), np.float32)
    v = corrsteer.core.steering_vector(W_dec, np.array([0, 1, 2]), np.array([1e8, 1.0, -1e8]))
    np.testing.assert_array_equal(v, [1.0, 1.0])


@pytest.mark.parametrize("n_rows,d_in", [(1, 1), (5, 640), (64, 2304)])
def test_add_to_rows_matches_reference(n_rows, d_in):
    rng = np.random.default_rng(n_rows)
    x = rng.standard_normal((n_rows, d_in)).astype(np.float32)
    v = rng.standard_normal(d_in).astype(np.float32)
    mask = rng.random(n_rows) < 0.5
    got, want = x.copy(), x.copy()
    assert kernels.add_to_rows(got, v, mask) is None
    reference.add_to_rows(want, v, mask)
    np.testing.assert_array_equal(got, want)
    kernels.add_to_rows(got, v)
    reference.add_to_rows(want, v)
    np.testing.assert_array_equal(got, want)


def test_add_to_rows_works_in_place_without_a_copy():
    buf = np.zeros((4, 3), np.float32)
    view = buf[1:3]  # C-contiguous view into buf
    kernels.add_to_rows(view, np.ones(3, np.float32), np.array([True, False]))
    np.testing.assert_array_equal(buf, [[0, 0, 0], [1, 1, 1], [0, 0, 0], [0, 0, 0]])
    kernels.add_to_rows(buf, np.ones(3), np.zeros(4, bool))  # empty mask changes nothing
    assert buf.sum() == 3
