"""PNG figures for corrsteer reports, drawn with matplotlib's Agg renderer.

Every axis here is categorical (layers, categories, candidate features, methods), so
every figure is a bar or point plot with error bars, never a line through categories.
Figures are built as ``matplotlib.figure.Figure`` objects on an explicit
``FigureCanvasAgg``: pyplot is never imported, so no global backend is switched, no
window can open, and figures are freed as soon as they are saved (no pyplot registry).

Each ``plot_*`` function takes plain data (dicts as found in results.json), writes one
PNG and returns its path.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from corrsteer.method.statistics import wilson_interval

__all__ = ["plot_layer_correlations", "plot_category_scores", "plot_selection", "plot_deltas", "plot_scale_curve",
           "feature_entries", "sorted_layers"]

log = logging.getLogger(__name__)

_BASE_COLOR, _STEER_COLOR = "#4c72b0", "#dd8452"
_POS_COLOR, _NEG_COLOR, _GREY = "#55a868", "#c44e52", "#8c8c8c"
_DPI = 120
_MAX_VERTICAL_GROUPS = 16  # more categories than this: categories go on the y axis
_LEGEND_OUTSIDE = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0),
                   "borderaxespad": 0.0}  # right of the axes: never hides a point


def _figure(n_items: int, height: float = 4.0) -> tuple[Figure, object]:
    """A figure whose width grows with the number of categorical items."""
    fig = Figure(figsize=(min(18.0, max(5.0, 1.2 + 0.45 * n_items)), height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig, ax


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI, format="png")
    log.info("wrote figure %s", path)
    return path


def _set_categories(ax: object, labels: Sequence[str]) -> None:
    ax.set_xticks(range(len(labels)))
    widest = max((len(line) for s in labels for line in s.splitlines()), default=0)
    long = len(labels) > 10 or widest > 8
    ax.set_xticklabels(labels, rotation=60 if long else 0, ha="right" if long else "center",
                       fontsize=8 if long else 9)
    ax.set_xlim(-0.6, len(labels) - 0.4)


def sorted_layers(keys: Sequence[object]) -> list[object]:
    """Layer keys in numeric order (JSON turns int keys into strings)."""
    def key(k: object) -> tuple[int, float, str]:
        try:
            return (0, float(k), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(k))
    return sorted(keys, key=key)


def feature_entries(entries: object) -> list[tuple[int, float, float | None]]:
    """Normalise a list of top features to ``[(index, r, coefficient), ...]``.

    Accepts tuples/lists ``(index, r[, coefficient])``, dicts with ``index``/``r``/
    ``coefficient`` keys, or a NumPy structured array with those fields.
    """
    if entries is None:
        return []
    out = []
    for i, e in enumerate(entries):
        try:
            if isinstance(e, Mapping):
                out.append((int(e["index"]), float(e["r"]), _opt_float(e.get("coefficient"))))
            elif getattr(e, "dtype", None) is not None and e.dtype.names:
                coef = e["coefficient"] if "coefficient" in e.dtype.names else None
                out.append((int(e["index"]), float(e["r"]), _opt_float(coef)))
            else:
                out.append((int(e[0]), float(e[1]), _opt_float(e[2] if len(e) > 2 else None)))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"feature entry {i} ({e!r}) is not (index, r, coefficient) "
                             f"or a dict with index/r/coefficient: {exc}") from exc
    return out


def _opt_float(x: object) -> float | None:
    return None if x is None else float(x)


def plot_layer_correlations(correlations: Mapping[object, Mapping], path: str | os.PathLike) -> Path:
    """Points: the top positive and top negative r per layer, the feature index beside each point.

    Args:
        correlations: ``{layer: {"positive": [(index, r, coef), ...], "negative": [...]}}``.
        path: PNG to write.

    Returns:
        ``path``.
    """
    layers = sorted_layers(list(correlations))
    if not layers:
        raise ValueError("correlations is empty: nothing to plot")
    fig, ax = _figure(len(layers))
    annotate = len(layers) <= 40
    for x, layer in enumerate(layers):
        entry = correlations[layer] or {}
        for sign, color, pick in (("positive", _POS_COLOR, max), ("negative", _NEG_COLOR, min)):
            feats = [f for f in feature_entries(entry.get(sign)) if (f[1] > 0) == (sign == "positive")
                     and f[1] != 0]
            if not feats:
                continue
            idx, r, _ = pick(feats, key=lambda f: f[1])
            ax.plot([x], [r], "o", color=color, markersize=6, label=f"top {sign} r")
            if annotate:
                ax.annotate(f"#{idx}", (x, r), xytext=(6, 0), textcoords="offset points", ha="left", va="center",
                            fontsize=7)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))  # one legend entry per sign
    if uniq:
        ax.legend(uniq.values(), uniq.keys(), **_LEGEND_OUTSIDE)
    ax.axhline(0.0, color="black", linewidth=0.8)
    lim = max([abs(v) for v in ax.get_ylim()] + [0.05]) * 1.5  # headroom for the index labels
    ax.set_ylim(-lim, lim)
    _set_categories(ax, [f"L{layer}" for layer in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("point-biserial r")
    ax.set_title("Top correlated SAE feature per layer\n(label: feature index)", fontsize=10)
    return _save(fig, path)


def plot_scale_curve(curve: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """Points: the validation score and the share of degenerate continuations per steering scale.

    Args:
        curve: ``[{"scale", "score", "degenerate", "allowed", "chosen"}]`` from
            :func:`corrsteer.method.calibration.calibrate_scale` (scale 0 = unsteered first).
        path: PNG to write.
    """
    if not curve:
        raise ValueError("curve is empty: nothing to plot")
    fig = Figure(figsize=(6.5, 4.2))
    FigureCanvasAgg(fig)
    score_ax, fluent_ax = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    labels = [("unsteered" if p["scale"] == 0 else f"{p['scale']:g}") for p in curve]
    xs = range(len(curve))
    for ax, key, ylabel in ((score_ax, "score", "validation score %"), (fluent_ax, "degenerate", "degenerate %")):
        for x, p in zip(xs, curve):
            color = _STEER_COLOR if p.get("chosen") else (_GREY if not p.get("allowed", True) else _BASE_COLOR)
            ax.plot([x], [100 * p[key]], "o", color=color, markersize=7 if p.get("chosen") else 5)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=8)
    fluent_ax.set_xlabel("scale (orange: chosen; grey: over the fluency guard)", fontsize=8)
    score_ax.set_title("--scale auto on the validation split", fontsize=10)
    return _save(fig, path)


def _interval_pp(score: float, n: int) -> tuple[float, float, float]:
    """(score, lower error, upper error) in percent, from a 95% Wilson interval."""
    k = int(round(score * n))
    lo, hi = wilson_interval(k, n)
    return 100 * score, max(0.0, 100 * (score - lo)), max(0.0, 100 * (hi - score))


def plot_category_scores(comparison: Mapping, path: str | os.PathLike) -> Path:
    """Baseline vs steered score, overall and per category, with 95% Wilson intervals.

    Args:
        comparison: a :func:`corrsteer.method.statistics.compare` dict (``baseline``, ``steered``
            and optionally ``per_category``).
        path: PNG to write.

    Returns:
        ``path``.
    """
    groups = [("all", comparison)] + sorted((comparison.get("per_category") or {}).items())
    horizontal = len(groups) > _MAX_VERTICAL_GROUPS  # many categories (MMLU subjects): one row each
    if horizontal:
        fig = Figure(figsize=(8.0, 1.4 + 0.28 * len(groups)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    else:
        fig, ax = _figure(len(groups) * 1.3)
    for offset, cond, color in ((-0.15, "baseline", _BASE_COLOR), (0.15, "steered", _STEER_COLOR)):
        pos, vals, lo, hi = [], [], [], []
        for i, (_, g) in enumerate(groups):
            part = g.get(cond) or {}
            if part.get("score") is None or not part.get("n"):
                continue
            v, el, eu = _interval_pp(float(part["score"]), int(part["n"]))
            pos.append(i + offset), vals.append(v), lo.append(el), hi.append(eu)
        if horizontal:  # rows top to bottom: baseline above steered within a row
            ax.errorbar(vals, pos, xerr=[lo, hi], fmt="o", linestyle="none", color=color,
                        capsize=3, markersize=5, label=cond)
        else:
            ax.errorbar(pos, vals, yerr=[lo, hi], fmt="o", linestyle="none", color=color,
                        capsize=4, markersize=6, label=cond)
    n_of = [(g.get("baseline") or {}).get("n", "?") for _, g in groups]
    title = "Baseline vs steered score (95% Wilson intervals)"
    if horizontal:
        ax.set_yticks(range(len(groups)))
        ax.set_yticklabels([f"{name} (n={n})" for (name, _), n in zip(groups, n_of)], fontsize=8)
        ax.set_ylim(len(groups) - 0.4, -0.6)  # "all" on top
        ax.axhline(0.5, color=_GREY, linewidth=0.8, linestyle=":")
        ax.set_xlim(-2, 102)
        ax.set_xlabel("score (%)")
    else:
        if len(groups) > 1:
            ax.axvline(0.5, color=_GREY, linewidth=0.8, linestyle=":")
        _set_categories(ax, [f"{name}\n(n={n})" for (name, _), n in zip(groups, n_of)])
        ax.set_ylim(-2, 102)
        ax.set_ylabel("score (%)")
    ax.set_title(title)
    ax.legend(**_LEGEND_OUTSIDE)
    return _save(fig, path)


def plot_selection(candidates: Sequence[Mapping], baseline_val_score: float | None,
                   path: str | os.PathLike) -> Path:
    """Validation score of each candidate feature, with the unsteered score as reference.

    Args:
        candidates: ``[{layer, index, sign, r, coefficient, val_score[, val_n]}, ...]``;
            ``val_n`` adds 95% Wilson error bars.
        baseline_val_score: unsteered validation score (horizontal line), or None.
        path: PNG to write.

    Returns:
        ``path``.
    """
    if not candidates:
        raise ValueError("candidates is empty: nothing to plot")
    cands = sorted(candidates, key=lambda c: (_layer_num(c.get("layer")), not _is_positive(c)))
    fig, ax = _figure(len(cands))
    base = None if baseline_val_score is None else 100 * float(baseline_val_score)
    for x, c in enumerate(cands):
        y = 100 * float(c["val_score"])
        better = base is not None and y > base
        color = _POS_COLOR if better else _GREY
        err = None
        if c.get("val_n"):
            _, el, eu = _interval_pp(float(c["val_score"]), int(c["val_n"]))
            err = [[el], [eu]]
        marker = "^" if _is_positive(c) else "v"
        ax.errorbar([x], [y], yerr=err, fmt=marker, linestyle="none", color=color, capsize=3,
                    markersize=7)
    if base is not None:
        ax.axhline(base, color="black", linewidth=1.0, linestyle="--", label=f"unsteered ({base:.1f}%)")
    for fmt, color, label in (("^", "black", "positive-r feature"), ("v", "black", "negative-r feature"),
                              ("s", _POS_COLOR, "strictly above unsteered"),
                              ("s", _GREY, "not above unsteered")):
        ax.plot([], [], fmt, color=color, label=label)  # legend proxies, no data
    ax.legend(**_LEGEND_OUTSIDE)
    _set_categories(ax, [f"L{c.get('layer')} {'+' if _is_positive(c) else '−'}#{c.get('index')}"
                         for c in cands])
    ax.set_ylabel("validation score (%)")
    ax.set_xlabel("candidate feature (layer, sign, index)")
    ax.set_title("Validation score per candidate feature")
    return _save(fig, path)


def _layer_num(layer: object) -> float:
    try:
        return float(layer)
    except (TypeError, ValueError):
        return math.inf


def _is_positive(c: Mapping) -> bool:
    sign = c.get("sign")
    if sign is not None:
        return str(sign).lower() in ("+", "positive", "pos", "1")
    return float(c.get("r") or 0.0) >= 0


def plot_deltas(rows: Mapping[str, Mapping], path: str | os.PathLike) -> Path:
    """Δ (steered − baseline) per method with its paired-bootstrap 95% interval.

    Args:
        rows: ``{method: compare() dict}``; rows without ``delta`` are skipped.
        path: PNG to write.

    Returns:
        ``path``.
    """
    items = [(k, v) for k, v in rows.items() if v.get("delta") is not None]
    if not items:
        raise ValueError("no row has a delta: nothing to plot")
    fig, ax = _figure(len(items))
    for x, (_, r) in enumerate(items):
        y = 100 * float(r["delta"])
        ci = r.get("ci95")
        err = None if ci is None else [[max(0.0, y - 100 * ci[0])], [max(0.0, 100 * ci[1] - y)]]
        excludes = ci is not None and (ci[0] > 0 or ci[1] < 0)
        color = (_POS_COLOR if y > 0 else _NEG_COLOR) if excludes else _GREY
        ax.errorbar([x], [y], yerr=err, fmt="o", linestyle="none", color=color, capsize=4,
                    markersize=7)
    ax.axhline(0.0, color="black", linewidth=0.8)
    _set_categories(ax, [str(k) for k, _ in items])
    ax.set_ylabel("Δ score (percentage points)")
    ax.set_title("Steered − baseline, paired bootstrap 95% CI\n(coloured: CI excludes 0)", fontsize=10)
    return _save(fig, path)
