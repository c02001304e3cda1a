"""report.md + PNG figures for one corrsteer run, or for a comparison of several.

:func:`write_report` turns the dict saved as results.json (and, optionally, the
per-layer top correlations) into ``out_dir/report.md`` with its figures in
``out_dir/figures/``; :func:`write_comparison_report` does the same for a table of
conditions (methods, controls, baselines), one :func:`corrsteer.method.statistics.compare`
dict per row. Every number in the markdown comes from the input dicts; the verdict
sentence is computed from them by :func:`corrsteer.report.tables.verdict`.

Example:
    >>> from corrsteer.method.statistics import compare
    >>> res = compare([0, 1, 0, 1], [1, 1, 0, 1], n_boot=200)
    >>> res.update(task="toy", model="tiny", mode="all", features=[])
    >>> path = write_report(tmp_dir, res)        # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from corrsteer.report import figures
from corrsteer.report.tables import compare_table, verdict
from corrsteer.storage import atomic

__all__ = ["write_report", "write_comparison_report"]

log = logging.getLogger(__name__)

STATS_NOTE = (
    "Statistics: scores are mean 0/1 rewards on the same test samples with and without "
    "steering (paired). Δ = steered − baseline in percentage points; its 95% interval is "
    "a paired percentile bootstrap (sample indices resampled with replacement, seeded). "
    "McNemar p is the exact two-sided binomial test on the discordant pairs "
    "(POS: 0→1, NEG: 1→0). SER = NEG / (NEG + POS), the share of changed answers that "
    "steering broke; – when nothing changed. Category error bars are 95% Wilson intervals."
)


def _cell(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple, dict)):
        v = json.dumps(v, default=str)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _flatten(d: Mapping, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_comparison(name: str, r: object) -> Mapping:
    if not isinstance(r, Mapping):
        raise TypeError(f"{name} must be a dict (results.json / compare() output), "
                        f"got {type(r).__name__}")
    for cond in ("baseline", "steered"):
        part = r.get(cond)
        if not isinstance(part, Mapping) or "score" not in part or "n" not in part:
            raise ValueError(f"{name} lacks {cond}: {{score, n}}; pass the dict returned by "
                             "corrsteer.method.statistics.compare() or saved as results.json")
    return r


def _section_run(results: Mapping) -> list[str]:
    rows = [[k, results.get(k)] for k in ("task", "model", "sae", "mode", "seed")
            if results.get(k) is not None]
    rows.append(["test samples (paired)", results["baseline"]["n"]])
    counts = {k: v for k, v in results.items() if k.startswith("n_") and not isinstance(v, Mapping)}
    rows += [[k, v] for k, v in sorted(counts.items())]
    out = ["## What was run\n", _table(["", "value"], rows)]
    config = results.get("config")
    if isinstance(config, Mapping) and config:
        out += ["\nConfig:\n", _table(["option", "value"], sorted(_flatten(config).items()))]
    return out


def _section_metrics(metrics: object) -> list[str]:
    if not isinstance(metrics, Mapping) or not metrics:
        return []
    base = _flatten(metrics.get("baseline") or {})
    steered = _flatten(metrics.get("steered") or {})
    if not base and not steered:  # metrics not split by condition: list them as they are
        return ["## Task metrics\n", _table(["metric", "value"], sorted(_flatten(metrics).items()))]
    rows = []
    for key in sorted(set(base) | set(steered)):
        b, s = base.get(key), steered.get(key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (b, s))
        rows.append([key, b, s, f"{s - b:+.4g}" if numeric else None])
    return ["## Task metrics\n", _table(["metric", "baseline", "steered", "Δ"], rows)]


def _section_features(features: object, steered_layers: object = None, method: object = None) -> list[str]:
    if features is None:
        return []
    if not features and steered_layers:  # a vector without SAE features, e.g. diff-in-means
        layers = ", ".join(str(l) for l in steered_layers)
        return ["## Features steered\n", f"No SAE feature: the `{method or 'selection'}` vectors steer "
                f"the residual stream directly at layer(s) {layers}.\n"]
    if not features:
        return ["## Features steered\n", "No feature was steered (the selection kept none), so "
                "the steered run equals the baseline up to numerical noise.\n"]
    rows = []
    for f in features:
        r = f.get("r")
        sign = f.get("sign") or ("+" if r is not None and r >= 0 else "−")
        rows.append([f.get("layer"), f.get("index"), sign, r, f.get("coefficient")])
    return ["## Features steered\n", _table(["layer", "index", "sign", "r", "coefficient"], rows)]


def _section_selection(selection: object, fig_dir: Path) -> list[str]:
    if not isinstance(selection, Mapping):
        return []
    cands = selection.get("candidates") or []
    base = selection.get("baseline_val_score")
    out = ["## Selection on the validation split\n"]
    if base is not None:
        out.append(f"Unsteered validation score: {100 * float(base):.1f}%. A candidate is kept by "
                   "`pruned` only if it is the better of its layer and *strictly* above this.\n")
    extra = {k: v for k, v in selection.items() if k not in ("candidates", "baseline_val_score", "scale_curve")}
    if extra:
        out.append(_table(["", "value"], sorted(_flatten(extra).items())))
    curve = selection.get("scale_curve")
    if curve:
        chosen = next((p["scale"] for p in curve if p.get("chosen")), None)
        out.append(f"\nScale chosen on the validation split: {chosen} (best score among the scales whose degenerate "
                   "continuations stay within the fluency guard; the test split was evaluated once, at it).\n")
        out.append(_table(["scale", "validation score", "degenerate", "within guard"],
                          [[p["scale"] or "unsteered", f"{100 * p['score']:.1f}%", f"{100 * p['degenerate']:.1f}%",
                            p.get("allowed")] for p in curve]))
        figures.plot_scale_curve(curve, fig_dir / "scale_curve.png")
        out.append("\n![Validation score per scale](figures/scale_curve.png)\n")
    if cands:
        rows = []
        for c in cands:
            v = c.get("val_score")
            above = None if base is None or v is None else ("yes" if v > base else "no")
            rows.append([c.get("layer"), c.get("index"), c.get("sign"), c.get("r"),
                         c.get("coefficient"), None if v is None else f"{100 * v:.1f}%", above])
        out.append(_table(["layer", "index", "sign", "r", "coefficient", "val score",
                           "above unsteered"], rows))
        if all(c.get("val_score") is not None for c in cands):
            figures.plot_selection(cands, base, fig_dir / "selection.png")
            out.append("\n![Validation score per candidate](figures/selection.png)\n")
    return out


def _section_correlations(correlations: object, fig_dir: Path) -> list[str]:
    if not isinstance(correlations, Mapping) or not correlations:
        return []
    rows = []
    for layer in figures.sorted_layers(list(correlations)):
        entry = correlations[layer] or {}
        pos = [f for f in figures.feature_entries(entry.get("positive")) if f[1] > 0]
        neg = [f for f in figures.feature_entries(entry.get("negative")) if f[1] < 0]
        top_p = max(pos, key=lambda f: f[1]) if pos else (None, None, None)
        top_n = min(neg, key=lambda f: f[1]) if neg else (None, None, None)
        rows.append([layer, top_p[0], top_p[1], top_p[2], top_n[0], top_n[1], top_n[2]])
    figures.plot_layer_correlations(correlations, fig_dir / "layer_correlations.png")
    return ["## Correlations per layer\n",
            "![Top correlated feature per layer](figures/layer_correlations.png)\n",
            "Here c is the accumulator's coefficient (the mean pooled activation over the rewarded "
            "samples); a steered negative feature is subtracted with −|c| (Features steered).\n",
            _table(["layer", "top + index", "r", "c", "top − index", "r", "c"], rows)]


def _section_saes(saes: object) -> list[str]:
    """Which SAE set the run used: source, settings hash, held-out metrics, training mix digests."""
    if not isinstance(saes, Mapping) or not saes:
        return []
    rows, mixes = [], set()
    for layer, d in saes.items():
        m, t = d.get("metrics") or {}, d.get("texts") or {}
        rows.append([layer, d.get("hook_name"), f"{d.get('architecture')} {d.get('d_sae')}"
                     + (f" k={d['k']}" if d.get("k") else ""), m.get("explained_variance"), m.get("l0"),
                     m.get("dead_fraction"), d.get("settings_hash") or d.get("source")])
        if t:
            mixes.add(f"{t.get('model_samples')} model samples (sha256 {str(t.get('model_samples_sha256'))[:12]}) "
                      f"+ {t.get('dataset_rows')} rows of {t.get('datasets')} "
                      f"(sha256 {str(t.get('dataset_rows_sha256'))[:12]})")
    out = ["## SAEs\n", _table(["layer", "hook", "SAE", "EV (held out)", "L0", "dead", "settings hash / source"],
                                rows)]
    out += [f"\nTraining text: {mix}.\n" for mix in sorted(mixes)]
    return out


def _section_timings(timings: object) -> list[str]:
    if not isinstance(timings, Mapping) or not timings:
        return []
    rows = []
    for k, v in _flatten(timings).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = f"{v:.1f} s" if v < 120 else f"{v:.0f} s ({v / 60:.1f} min)"
        rows.append([k, v])
    return ["## Timings\n", _table(["stage", "wall time"], rows)]


def write_report(out_dir: str | os.PathLike, results: Mapping,
                 correlations: Mapping | None = None) -> Path:
    """Write ``out_dir/report.md`` and its figures for one run.

    Args:
        out_dir: output folder (created if missing); figures go to ``out_dir/figures/``.
        results: the results.json dict: required ``baseline`` and ``steered`` (each
            ``{score, n}``); optional task, model, sae, mode, seed, delta, ci95,
            mcnemar_p, ser, pos, neg, per_category, metrics {baseline, steered},
            features [{layer, index, r, coefficient}], selection {candidates,
            baseline_val_score, ...}, timings, config, n_* sample counts.
        correlations: ``{layer: {"positive": [(index, r, coefficient), ...],
            "negative": [...]}}``; defaults to ``results["correlations"]`` if present.

    Returns:
        Path of the written report.md.
    """
    results = _check_comparison("results", results)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if correlations is None:
        correlations = results.get("correlations")
    title = " · ".join(str(results[k]) for k in ("task", "model", "mode") if results.get(k))
    mode = str(results.get("mode") or "steered")
    md = [f"# corrsteer report{': ' + title if title else ''}\n",
          f"**Verdict:** {verdict(results)}.\n"]
    if results.get("command"):
        md.append(f"Made by `{results['command']}`.\n")
    md += _section_run(results)
    md += ["## Result on the test split\n", compare_table({mode: results})]
    md.append(f"\n{STATS_NOTE}\n")
    per_cat = results.get("per_category") or {}
    figures.plot_category_scores(results, fig_dir / "category_scores.png")
    if per_cat:
        md += ["## Per category\n", compare_table(dict(sorted(per_cat.items())))]
    md.append("\n![Baseline vs steered per category](figures/category_scores.png)\n")
    md += _section_metrics(results.get("metrics"))
    md += _section_features(results.get("features"), results.get("steered_layers"), results.get("method"))
    md += _section_selection(results.get("selection"), fig_dir)
    md += _section_correlations(correlations, fig_dir)
    md += _section_saes(results.get("saes"))
    md += _section_timings(results.get("timings"))
    path = out_dir / "report.md"
    atomic.write_text(path, "\n".join(md))
    log.info("wrote %s", path)
    return path


def write_comparison_report(out_dir: str | os.PathLike, rows: Mapping[str, Mapping],
                            title: str = "corrsteer comparison",
                            filename: str = "report.md") -> Path:
    """Write a markdown table of several conditions and a Δ-with-CI point plot.

    Args:
        out_dir: output folder (created if missing); the figure goes to
            ``out_dir/figures/deltas.png``.
        rows: ``{condition name: compare() dict}`` in display order; a row may also
            carry ``features`` (list) and ``command`` (str, the command that produced it).
        title: heading of the report.
        filename: markdown file name inside ``out_dir``.

    Returns:
        Path of the written markdown file.
    """
    if not isinstance(rows, Mapping) or not rows:
        raise ValueError("rows must be a non-empty dict of condition name -> compare() dict")
    for name, r in rows.items():
        _check_comparison(f"rows[{name!r}]", r)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    md = [f"# {title}\n", compare_table(rows), f"\n{STATS_NOTE}\n", "## Verdicts\n"]
    for name, r in rows.items():
        feats, layers = r.get("features"), r.get("steered_layers") or []
        if feats is None:
            extra = ""
        elif not feats and layers:  # residual vectors without SAE features (diff-in-means)
            extra = f" ({len(layers)} residual vector{'s' * (len(layers) != 1)} steered, no SAE feature)"
        else:
            extra = f" ({len(feats)} feature{'s' * (len(feats) != 1)} steered)"
        md.append(f"- **{name}**{extra}: {verdict(r)}.")
    commands = [(name, r["command"]) for name, r in rows.items() if r.get("command")]
    if commands:
        md += ["\n## Commands\n"] + [f"- {name}: `{cmd}`" for name, cmd in commands]
    if any(r.get("delta") is not None for r in rows.values()):
        figures.plot_deltas(rows, fig_dir / "deltas.png")
        md.append("\n![Δ per condition with 95% CI](figures/deltas.png)\n")
    path = out_dir / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, "\n".join(md) + "\n")
    log.info("wrote %s", path)
    return path
