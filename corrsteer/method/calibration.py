"""The steering strength, measured rather than assumed: ``--scale auto`` picks it on the validation split.

A selection's vectors are ``scale · Σ c_k W_dec[i_k]``; the paper fixes ``scale = 1``. Too
weak a vector changes nothing, too strong a one breaks the text. :func:`calibrate_scale`
steers the validation split at every scale of a grid (one batched pass per scale, the
unsteered pass as scale 0) and keeps the scale with the best validation score among those
whose share of degenerate continuations (:mod:`corrsteer.method.fluency`) stays within
``guard`` of the unsteered share; ties go to the smaller scale. The test split is not
touched: it is evaluated once, at the chosen scale. The whole curve (score and
degenerate share per scale) is returned for the report's point plot.

Example:
    >>> scale, curve = calibrate_scale(model, tok, task, sel, task.samples("validation", 100))  # doctest: +SKIP
    >>> [(p["scale"], p["score"]) for p in curve]                                                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from corrsteer.method.evaluation import generate_records
from corrsteer.method.fluency import degenerate_rate

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_GRID", "DEFAULT_GUARD", "calibrate_scale"]

DEFAULT_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DEFAULT_GUARD = 0.10  # the degenerate share may rise by at most 10 points over the unsteered one


def calibrate_scale(model: Any, tokenizer: Any, task: Any, selection: Any, samples: Sequence[Any],
                    grid: Sequence[float] = DEFAULT_GRID, guard: float = DEFAULT_GUARD, *, batch_size: int = 16,
                    max_new_tokens: int | None = None, progress: bool = True) -> tuple[float, list[dict[str, Any]]]:
    """The scale of ``grid`` with the best validation score within the fluency guard.

    Args:
        model, tokenizer, task: the causal LM, its tokenizer and the task.
        selection: the :class:`corrsteer.Selection` to scale (its own ``scale`` is ignored).
        samples: the validation samples.
        grid: positive scales to try.
        guard: how much the share of degenerate continuations may exceed the unsteered share.
        batch_size, max_new_tokens, progress: generation options.

    Returns:
        ``(scale, curve)``: the chosen scale (1.0 when nothing steers) and one point per scale,
        unsteered (scale 0) first: ``{"scale", "score", "degenerate", "allowed", "chosen"}``.

    Raises:
        ValueError: an empty or non-positive grid, a negative guard, no samples.
    """
    grid = sorted({float(s) for s in grid})
    if not grid or any(not math.isfinite(s) or s <= 0 for s in grid):
        raise ValueError(f"grid={grid!r} must hold finite scales > 0")
    if not math.isfinite(guard) or guard < 0:
        raise ValueError(f"guard={guard!r} must be a finite share >= 0")
    if not samples:
        raise ValueError("samples is empty: calibrating the scale needs validation samples (n_val)")
    gen = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress)
    base = generate_records(model, tokenizer, task, samples, None, desc="scale 0 (unsteered)", **gen)
    curve = [{"scale": 0.0, "score": float(np.mean([r["reward"] for r in base])), "degenerate": degenerate_rate(base),
              "allowed": True, "chosen": False}]
    if not selection.layers:
        log.warning("calibrate_scale: the selection steers nothing; keeping scale 1")
        return 1.0, curve
    limit = curve[0]["degenerate"] + guard
    for s in grid:
        recs = generate_records(model, tokenizer, task, samples, selection.interventions(s), desc=f"scale {s:g}",
                                **gen)
        rate = degenerate_rate(recs)
        curve.append({"scale": s, "score": float(np.mean([r["reward"] for r in recs])), "degenerate": rate,
                      "allowed": bool(rate <= limit + 1e-12), "chosen": False})
        log.info("scale %g: validation score %.4f, degenerate %.3f", s, curve[-1]["score"], rate)
    allowed = [p for p in curve[1:] if p["allowed"]]
    if not allowed:
        log.warning("calibrate_scale: every scale of %s breaks more than %.0f%% more continuations than "
                    "unsteered; keeping the smallest, %g", grid, 100 * guard, grid[0])
        best = curve[1]
    else:
        best = max(allowed, key=lambda p: (p["score"], -p["scale"]))  # ties: the smaller scale
    best["chosen"] = True
    return best["scale"], curve
