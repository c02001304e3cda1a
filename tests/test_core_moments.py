"""_core.Accumulator.moments(): the raw state copied out by the C core (cs_corr_moments),
against the NumPy twin's state, the serialised bytes, and across merges.

Tolerances as in test_core_correlation.py: both keep float64 centred moments and
differ only in summation order; counts are exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from corrsteer.core import reference
from corrsteer.core.kernels import _core

ARRAYS = ("mean", "m2", "mean_pos", "n_active", "n_pos_active", "c_zy")
SCALARS = ("n", "n_pos", "mean_y", "m2_y")
TWIN = {"n_pos_active": "pos_active"}  # the twin's name for the same field


def make_data(seed: int, n: int, d_sae: int, kind: str):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.float64) if kind == "binary" else rng.random(n)
    z = np.maximum(rng.standard_normal((n, d_sae)) + y[:, None] * rng.standard_normal(d_sae), 0)
    return z.astype(np.float32), y


@pytest.mark.parametrize("kind", ["binary", "pearson"])
@pytest.mark.parametrize("n,d_sae,batch", [(1, 1, 1), (60, 7, 13), (300, 1100, 64)])
def test_moments_match_reference_state(kind, n, d_sae, batch):
    z, y = make_data(n + d_sae, n, d_sae, kind)
    acc, twin = _core.Accumulator(d_sae, ("binary", "pearson").index(kind)), \
        reference.CorrelationAccumulator(d_sae, kind)
    for i in range(0, n, batch):
        acc.update(z[i:i + batch], y[i:i + batch])
        twin.update(z[i:i + batch], y[i:i + batch])
    m = acc.moments()
    assert set(m) == set(ARRAYS) | set(SCALARS)
    assert m["n"] == twin.n == n
    for name in ("n_pos", "mean_y", "m2_y"):
        assert isinstance(m[name], float)
        assert m[name] == pytest.approx(getattr(twin, name), rel=1e-12, abs=1e-12), name
    for name in ARRAYS:
        got, want = m[name], getattr(twin, TWIN.get(name, name))
        assert got.dtype == np.float64 and got.shape == (d_sae,) and got.flags.c_contiguous
        if name == "n_active":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("kind", [0, 1])
def test_moments_are_the_serialised_state_bit_for_bit(kind):
    z, y = make_data(3, 200, 33, ("binary", "pearson")[kind])
    acc = _core.Accumulator(33, kind)
    acc.update(z[:77], y[:77])
    other = _core.Accumulator(33, kind)
    other.update(z[77:], y[77:])
    acc.merge(other)
    m, data = acc.moments(), acc.to_bytes()
    head = np.frombuffer(data, "<f8", count=4, offset=24)
    body = np.frombuffer(data, "<f8", count=6 * 33, offset=56).reshape(6, 33)
    assert [m[s] for s in SCALARS] == head.tolist()
    for name, row in zip(ARRAYS, body):
        assert m[name].tobytes() == row.tobytes(), name


def test_moments_of_an_empty_accumulator_are_zero_and_fresh_each_call():
    acc = _core.Accumulator(5)
    m = acc.moments()
    assert all(m[s] == 0.0 for s in SCALARS)
    assert all(not m[a].any() for a in ARRAYS)
    m["mean"][:] = 7.0  # a copy: changing it changes nothing in the accumulator
    assert not acc.moments()["mean"].any()
    acc.update(np.ones((2, 5), np.float32), np.array([0.0, 1.0]))
    assert m["n"] == 0.0 and acc.moments()["n"] == 2.0
