"""Debiasing: steer BBQ and EMGSD with reward-correlated or label features; accuracy and bias by category.

Two kinds of steering are compared with the unsteered model on the same test samples:

- **pipeline** features: a selection folder written by ``corrsteer run --task bbq_ambig``
  (features whose activation correlates with answering BBQ correctly);
- **label** features (METHOD.md §7): from ``corrsteer labels --dataset emgsd``, per layer
  add the top feature of the ``neutral`` label and subtract the top feature of the
  ``stereotype`` label, each with its label coefficient (the mean pooled activation
  over that label's texts) times ``scale``:
  ``v_l = scale · (c_n · W_dec[i_n] − c_s · W_dec[i_s])``.

For each task (``bbq_ambig``, ``bbq_disambig``, ``emgsd`` by default) the report gives
the score with its paired bootstrap interval, McNemar p and SER, the score per category,
and for BBQ the bias scores ``s_AMB`` / ``s_DIS`` per category (``corrsteer.tasks.bbq``)
with a percentile bootstrap 95% interval (records resampled within the category).

Example::

    corrsteer debias --selection runs/bbq/selection --labels runs/labels_emgsd --n-test 150 --out runs/debias
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer.method.evaluation import evaluate, generate_records
from corrsteer.method.features import Feature, Selection
from corrsteer.report import figures
from corrsteer.report.records import write_generations_jsonl
from corrsteer.report.tables import compare_table
from corrsteer.storage import atomic
from corrsteer.studies.labels import LabelCorrelations
from corrsteer.tasks import get_task
from corrsteer.tasks.bbq import bias_flags, meta_field

log = logging.getLogger(__name__)

DEFAULT_TASKS = ("bbq_ambig", "bbq_disambig", "emgsd")
BIAS_KEYS = {"ambig": "s_amb", "disambig": "s_dis"}


def label_selection(labels: Any, saes: Mapping[int, Any], add: str = "neutral", subtract: str = "stereotype",
                    scale: float = 1.0, layers: Sequence[int] | None = None) -> Selection:
    """Per layer: add the top ``add``-label feature, subtract the top ``subtract``-label feature.

    Args:
        labels: a ``corrsteer.studies.labels.LabelCorrelations`` or the folder it was saved to.
        saes: layer -> SAE (the SAEs the label correlations were computed with).
        add, subtract: label names (``None`` to skip one side).
        scale: factor on every label coefficient.
        layers: layers to use (default: every layer of ``labels`` with an SAE).

    Returns:
        A ``Selection`` (method ``"labels"``) with one or two features per layer.
    """
    lc = labels if isinstance(labels, LabelCorrelations) else LabelCorrelations.load(labels)
    for name in (add, subtract):
        if name is not None and name not in lc.labels:
            raise ValueError(f"label {name!r} is not in the label correlations (labels: {lc.labels})")
    use = [l for l in lc.layers if l in saes] if layers is None else list(layers)
    missing = [l for l in use if l not in saes or l not in lc.layers]
    if missing or not use:
        raise ValueError(f"layers {missing or use} need both label correlations (layers {lc.layers}) and an SAE "
                         f"(layers {sorted(saes)}); pass the SAEs used by `corrsteer labels`")
    features = []
    for layer in use:
        for label, sign in ((add, 1), (subtract, -1)):
            if label is None:
                continue
            acc = lc.accumulators[label][layer]
            if acc.d_sae != saes[layer].W_dec.shape[0]:
                raise ValueError(f"layer {layer}: the label accumulators have d_sae={acc.d_sae} but the SAE has "
                                 f"{saes[layer].W_dec.shape[0]}; pass the SAEs used by `corrsteer labels`")
            top = lc.top(label, layer, 1, "positive")
            if not top:
                log.warning("label %r has no positively correlated feature at layer %d", label, layer)
                continue
            t = top[0]
            features.append(Feature(layer=layer, index=int(t["index"]), sign=sign, r=float(t["r"]),
                                    coefficient=sign * abs(float(t["coefficient"])),
                                    mean_pos=float(t["coefficient"])))
    note = "" if features else "no label feature with r > 0 in any layer; steering nothing"
    return Selection.from_features(features, saes, "all", scale=float(scale), note=note, method="labels",
                                   meta={"add": add, "subtract": subtract, "labels": lc.meta.get("source")})


def _bias_parts(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per record: (correct, counted = non-unknown with a stereotyped option, biased), as float arrays."""
    correct, counted, biased = [], [], []
    for r in records:
        ok, b = bias_flags(r)
        correct.append(float(r["reward"]))
        counted.append(float(ok))
        biased.append(float(b))
    return np.array(correct), np.array(counted), np.array(biased)


def _bias_from_sums(correct: np.ndarray, counted: np.ndarray, biased: np.ndarray, n: int,
                    condition: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(counted > 0, 2.0 * biased / counted - 1.0, np.nan)
    return (1.0 - correct / n) * raw if condition == "ambig" else raw


def bias_intervals(records: Sequence[Mapping[str, Any]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """BBQ bias score (``s_amb`` or ``s_dis``) overall and per category, with percentile bootstrap 95% intervals.

    Args:
        records: evaluated BBQ records of one context condition (with the sample meta).
        n_boot: bootstrap resamples (records drawn with replacement within each group).
        seed: seed (``default_rng([seed, group index])``).

    Returns:
        ``{group: {"score", "ci95": [lo, hi] | None, "n"}}`` with group ``"overall"`` and each
        category; ``score`` equals ``corrsteer.tasks.bbq.bias_scores`` (None when no answer counts).
    """
    conditions = {str(meta_field(r, "context_condition")) for r in records}
    if len(conditions) != 1 or next(iter(conditions)) not in BIAS_KEYS:
        raise ValueError(f"bias_intervals needs the records of one BBQ context condition, got {sorted(conditions)}")
    condition = next(iter(conditions))
    groups = {"overall": list(records)}
    for r in records:
        groups.setdefault(str(r.get("category")), []).append(r)
    out = {}
    for g, (name, recs) in enumerate(groups.items()):
        c, k, b = _bias_parts(recs)
        n = len(recs)
        score = _bias_from_sums(c.sum(), k.sum(), b.sum(), n, condition)[()]
        idx = np.random.default_rng([seed, g]).integers(0, n, size=(n_boot, n))  # (n_boot, n)
        boot = _bias_from_sums(c[idx].sum(1), k[idx].sum(1), b[idx].sum(1), n, condition)
        boot = boot[np.isfinite(boot)]
        ci = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))] if len(boot) else None
        out[name] = {"score": None if not np.isfinite(score) else float(score), "ci95": ci, "n": n}
    return out


def plot_bias(bias: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str], title: str) -> Path:
    """Point plot of the bias score per category and condition with 95% intervals (categorical axis).

    Args:
        bias: ``{condition name: bias_intervals(...)}`` (e.g. unsteered, pipeline, labels).
        path: PNG to write.
        title: the figure's title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(next(iter(bias.values())))
    fig = Figure(figsize=(max(5.0, 1.3 * len(groups) + 2), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.6 / max(1, len(bias))
    for j, (cond, by_group) in enumerate(bias.items()):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            e = by_group.get(g) or {}
            if e.get("score") is None:
                continue
            ci = e.get("ci95") or [e["score"], e["score"]]
            xs.append(i - 0.3 + width * (j + 0.5)), ys.append(e["score"])
            lo.append(max(0.0, e["score"] - ci[0])), hi.append(max(0.0, ci[1] - e["score"]))
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", linestyle="none", capsize=3, label=cond)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right")
    ax.set_ylabel("bias score (0 = unbiased)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _task_samples(task: Any, n: int, seed: int) -> list[Any]:
    available = len(task.samples("test", None, seed=seed))
    if available < n:
        log.warning("%s has %d test samples; using all of them (asked for %d)", task.name, available, n)
    return task.samples("test", min(n, available), seed=seed)


def debias(model: Any, tokenizer: Any, conditions: Mapping[str, Any], tasks: Sequence[str] = DEFAULT_TASKS, *,
           n_test: int = 150, seed: int = 0, batch_size: int = 16, data_dir: str | None = None,
           max_new_tokens: int | None = None, n_boot: int = 2000, progress: bool = True,
           out_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Unsteered vs each steering condition on each task: scores, per category, BBQ bias scores.

    Args:
        model, tokenizer: the causal LM.
        conditions: ``{name: Selection}`` (e.g. ``{"pipeline": Selection.load("runs/bbq/selection"),
            "labels": label_selection(...)}``).
        tasks: task names (BBQ tasks get bias scores).
        n_test: test samples per task (all of them when the split is smaller).
        seed: test draw and bootstrap seed.
        batch_size, max_new_tokens: generation options.
        n_boot: bootstrap resamples.
        progress: tqdm bars.
        out_dir: where to write ``debias.json``, ``debias.md`` and ``figures/`` (None: nothing written).

    Returns:
        ``{"tasks": {task: {"n", "conditions": {name: compare() dict + metrics + bias}, "bias_baseline"}},
        "timings"}``.
    """
    if not conditions:
        raise ValueError("conditions is empty: give at least one steering condition (a selection)")
    t0 = time.perf_counter()
    doc: dict[str, Any] = {"tasks": {}, "seed": seed, "n_test": n_test}
    for name in tasks:
        task = get_task(name, data_dir=data_dir)
        samples = _task_samples(task, n_test, seed)
        base = generate_records(model, tokenizer, task, samples, None, batch_size=batch_size,
                                max_new_tokens=max_new_tokens, progress=progress, desc=f"{name} unsteered",
                                condition="baseline")
        entry: dict[str, Any] = {"n": len(samples), "conditions": {}}
        is_bbq = name.startswith("bbq_")
        if is_bbq:
            entry["bias_baseline"] = bias_intervals(base, n_boot, seed)
        for cond, sel in conditions.items():
            ev = evaluate(model, tokenizer, task, sel, samples, batch_size=batch_size, max_new_tokens=max_new_tokens,
                          n_boot=n_boot, seed=seed, progress=progress, baseline=base, label=f"{name} {cond}")
            row = dict(ev.comparison)
            if is_bbq:
                row["bias"] = bias_intervals(ev.steered, n_boot, seed)
            entry["conditions"][cond] = row
            if out_dir is not None:
                write_generations_jsonl(Path(out_dir) / "generations" / f"{name}_{cond}.jsonl", base + ev.steered)
        doc["tasks"][name] = entry
    doc["timings"] = {"total_s": time.perf_counter() - t0}
    doc["features"] = {c: [{"layer": f.layer, "index": f.index, "sign": f.sign, "r": f.r,
                            "coefficient": f.coefficient} for f in s.features] for c, s in conditions.items()}
    if out_dir is not None:
        write_debias_report(doc, out_dir)
    return doc


def _ci(e: Mapping[str, Any] | None) -> str:
    if not e or e.get("score") is None:
        return "–"
    ci = e.get("ci95")
    return f"{e['score']:+.3f}" + ("" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]")


def write_debias_report(doc: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``debias.json``, ``debias.md`` and the point plots (``figures/``) of a :func:`debias` result."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "debias.json", doc, indent=1, default=str)
    md = ["# Debiasing: unsteered vs steered, by task and category\n"]
    if doc.get("command"):
        md.append(f"`{doc['command']}`\n")
    md += ["## Scores\n", compare_table({f"{t} / {c}": r for t, e in doc["tasks"].items()
                                         for c, r in e["conditions"].items()})]
    md.append("\nScores are accuracies (%); Δ in points with a paired bootstrap 95% interval, exact McNemar p, "
              "SER = NEG / (NEG + POS).\n")
    for t, e in doc["tasks"].items():
        md += [f"## {t}: accuracy per category\n",
               compare_table({f"{cat} / {c}": pc for c, r in e["conditions"].items()
                              for cat, pc in sorted(r.get("per_category", {}).items())})]
        for c, r in e["conditions"].items():
            png = f"figures/{t}_{c}_categories.png"
            figures.plot_category_scores(r, out / png)
            md.append(f"\n![{t} {c} per category]({png})\n")
        if "bias_baseline" in e:
            bias = {"unsteered": e["bias_baseline"], **{c: r["bias"] for c, r in e["conditions"].items()}}
            key = BIAS_KEYS[t.split("_", 1)[1]]
            header = "| category | " + " | ".join(f"{k} {key}" for k in bias) + " |"
            md += [f"### {t}: BBQ bias score {key} (95% bootstrap interval; 0 = unbiased)\n", header,
                   "|---|" + "---|" * len(bias)]
            for g in e["bias_baseline"]:
                md.append(f"| {g} (n={e['bias_baseline'][g]['n']}) | " +
                          " | ".join(_ci(b.get(g)) for b in bias.values()) + " |")
            png = f"figures/{t}_bias.png"
            plot_bias(bias, out / png, f"{t}: bias score {key} by category")
            md.append(f"\n![{t} bias by category]({png})\n")
    if doc.get("features"):
        md += ["## What each condition steers\n", "| condition | features (layer, sign, index, r, coefficient) |",
               "|---|---|"]
        for c, feats in doc["features"].items():
            md.append(f"| {c} | " + ("; ".join(
                f"L{f['layer']} {'+' if f['sign'] > 0 else '−'}#{f['index']} (r={f['r']:+.3f}, c={f['coefficient']:.3g})"
                for f in feats) or "nothing") + " |")
    md.append(f"\nTotal time {doc.get('timings', {}).get('total_s', 0):.0f} s.\n")
    return atomic.write_text(out / "debias.md", "\n".join(md))
