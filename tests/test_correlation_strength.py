"""scripts/correlation_strength.py: its null bar is what unrelated latents actually reach."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "correlation_strength.py"


def _script():
    spec = importlib.util.spec_from_file_location("correlation_strength", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("n_latents, n_samples", [(2048, 200), (8192, 200), (2048, 400)])
def test_the_null_bar_matches_unrelated_latents(n_latents: int, n_samples: int) -> None:
    rng = np.random.default_rng(0)
    maxima = []
    for _ in range(5):
        x = rng.standard_normal((n_samples, n_latents))
        y = rng.integers(0, 2, n_samples).astype(float)
        xc, yc = x - x.mean(0), y - y.mean()
        r = (xc * yc[:, None]).sum(0) / np.sqrt((xc**2).sum(0) * (yc**2).sum())
        maxima.append(np.abs(r).max())
    null_max = _script().null_max
    bar = null_max(n_latents, n_samples)
    assert abs(np.mean(maxima) - bar) < 0.06 * bar, (np.mean(maxima), bar)
    assert np.isnan(null_max(0, n_samples))
