"""The method's objects as results.json records them: correlations, the selection, its features.

Example:
    >>> correlations_summary(collection.accumulators, k=5)["6"]["positive"][0]   # doctest: +SKIP
    [881, 0.21, 3.4]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corrsteer.config import SIGNS

__all__ = ["correlations_summary", "features_summary", "selection_summary"]


def correlations_summary(accumulators: Mapping[int, Any], k: int = 5) -> dict[str, dict[str, list]]:
    """Top-k positive and negative features per layer: ``{layer: {"positive": [[i, r, c]], "negative": ...}}``.

    ``c`` is the accumulator's coefficient (``mean_pos``), unsigned; ranking by the C core.
    """
    out = {}
    for layer in sorted(accumulators):
        acc = accumulators[layer]
        if acc.n_positive in (0, acc.n):
            out[str(layer)] = {"positive": [], "negative": []}
            continue
        out[str(layer)] = {sign: [[int(row["index"]), float(row["r"]), float(row["coefficient"])]
                                  for row in acc.top(min(k, acc.d_sae), sign)] for sign in SIGNS}
    return out


def selection_summary(sel: Any) -> dict[str, Any]:
    """The selection as results.json and the report show it (one row per candidate's best feature)."""
    n_val = sel.meta.get("n_val") or None
    cands = [{"layer": c.layer, "index": c.features[0].index, "indices": [f.index for f in c.features],
              "sign": "+" if c.sign > 0 else "-", "r": c.features[0].r, "coefficient": c.features[0].coefficient,
              "val_score": c.score, "val_n": n_val if c.score is not None else None, "kept": c.kept}
             for c in sel.candidates]
    out = {"mode": sel.mode, "method": sel.method, "top_k": sel.top_k, "scale": sel.scale, "note": sel.note,
           "baseline_val_score": sel.baseline_score, "candidates": cands}
    for key in ("negative_coefficient", "scale_curve"):
        if key in sel.meta:
            out[key] = sel.meta[key]
    return out


def features_summary(sel: Any) -> list[dict[str, Any]]:
    """The steered features as results.json lists them: layer, index, sign, r, signed coefficient (before scale)."""
    return [{"layer": f.layer, "index": f.index, "sign": "+" if f.sign > 0 else "-", "r": f.r,
             "coefficient": f.coefficient} for f in sel.features]
