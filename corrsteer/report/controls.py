"""``controls.md``: CorrSteer beside its controls (each drawn several times) and baselines, on the same prompts.

The table a reader needs to tell a working method from noise: the unsteered score, CorrSteer,
each drawn control as its mean over the draws (bootstrap interval, sign-flip p) with every
draw below it, then the other baselines; for every condition the share of degenerate
continuations (and the unsteered model's perplexity of them when measured); CorrSteer
against each control's draws on the same prompts; three example pairs; what each condition
steers. Every number comes from the dict :func:`corrsteer.studies.controls.run_controls`
returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corrsteer.report import figures
from corrsteer.report.markdown import STATS_NOTE
from corrsteer.report.tables import format_p
from corrsteer.storage import atomic

__all__ = ["controls_markdown", "write_controls_report"]


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None or x != x:
        return "–"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _ci(ci: Any) -> str:
    return "–" if not ci else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _row(name: str, r: Mapping[str, Any], p: str, fluency: Mapping[str, float] | None, ppl: bool,
         steers: str = "") -> str:
    cells = [name, _pct(r["steered"]["score"]), _pct(r.get("delta"), True), _ci(r.get("ci95")), p,
             _pct((fluency or {}).get("degenerate"))]
    if ppl:
        cells.append(f"{(fluency or {}).get('perplexity', float('nan')):.1f}")
    return "| " + " | ".join(_cell(c) for c in cells + [steers]) + " |"


def controls_markdown(doc: Mapping[str, Any]) -> str:
    """The markdown of a :func:`corrsteer.studies.controls.run_controls` result."""
    rows, summaries, fluency = doc["rows"], doc.get("summaries") or {}, doc.get("fluency") or {}
    ppl = any("perplexity" in f for f in fluency.values())
    base = next(iter(rows.values()))["baseline"]
    head = ["condition", "score %", "Δ pp", "95% CI (pp)", "p", "degenerate %"] + (["ppl"] if ppl else []) + ["steers"]
    md = [f"# CorrSteer vs controls: {doc['task']} · {doc['model']} · mode {doc['mode']} · n_train {doc['n_train']} "
          f"· n_test {doc['n_test']} · {doc.get('draws', 1)} draw(s) per drawn control\n"]
    if doc.get("command"):
        md.append(f"Made by `{doc['command']}`.\n")
    md += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    unsteered = ["unsteered", _pct(base["score"]), "", "", "", _pct(fluency.get("unsteered", {}).get("degenerate"))]
    md.append("| " + " | ".join(unsteered + ([f"{fluency['unsteered']['perplexity']:.1f}"] if ppl else []) + [""])
              + " |")
    cs = rows["corrsteer"]
    md.append(_row("**CorrSteer**", cs, f"{format_p(cs['mcnemar_p'])} (McNemar)", cs.get("fluency"), ppl,
                   cs.get("steers", "")))
    for m, s in summaries.items():
        md.append(_row(f"**{m}**, mean of {s['n_draws']} draws", s, f"{format_p(s['p'])} (sign-flip)", None, ppl,
                       f"draws' Δ from {100 * s['spread'][0]:+.1f} to {100 * s['spread'][1]:+.1f} pp"))
        for name, r in rows.items():
            if name.startswith(f"{m} #"):
                md.append(_row(f"↳ {name}", r, f"{format_p(r['mcnemar_p'])} (McNemar)", r.get("fluency"),
                               ppl, r.get("steers", "")))
    others = [n for n in rows if n != "corrsteer" and not any(n.startswith(f"{m} #") for m in summaries)]
    for name in others:
        r = rows[name]
        md.append(_row(name, r, f"{format_p(r['mcnemar_p'])} (McNemar)", r.get("fluency"), ppl, r.get("steers", "")))
    md.append(f"\nUnsteered: {_pct(base['score'])}% of {base['n']} test prompts. Δ is steered − unsteered on the "
              "same prompts. A drawn control's row is the mean over its draws: its interval bootstraps the prompts "
              "with the draws averaged per prompt, its p is a sign-flip permutation test (McNemar needs 0/1 "
              "outcomes). Degenerate: empty, or one word more than half of it, or a repeated word 3-gram "
              "(corrsteer.method.fluency).\n")
    versus = doc.get("versus") or {}
    if versus:
        md += ["## CorrSteer against each control, on the same prompts\n",
               "| control | CorrSteer − control (pp) | 95% CI (pp) | sign-flip p |", "|---|---|---|---|"]
        md += [f"| {m} (mean of its draws) | {_pct(v['delta'], True)} | {_ci(v['ci95'])} | {format_p(v['p'])} |"
               for m, v in versus.items()]
        md.append("")
    if doc.get("examples"):
        md.append("## Examples: the same prompt, unsteered and steered by CorrSteer\n")
        for i, e in enumerate(doc["examples"], 1):
            md += [f"{i}. `{_cell(e['prompt'][-120:])}`",
                   f"   - unsteered (reward {e['reward'][0]}): {_cell(e['unsteered']) or '(empty)'}",
                   f"   - CorrSteer (reward {e['reward'][1]}): {_cell(e['steered']) or '(empty)'}"]
        md.append("")
    md += [STATS_NOTE, ""]
    t = doc.get("timings") or {}
    if t:
        md.append(f"Timings: collect {t.get('collect_s', 0):.0f} s, select {t.get('select_s', 0):.0f} s, evaluate "
                  f"{t.get('eval_s', 0):.0f} s, total {t.get('total_s', 0):.0f} s.\n")
    return "\n".join(md)


def write_controls_report(out_dir: str | os.PathLike, doc: Mapping[str, Any], filename: str = "controls.md") -> Path:
    """Write ``controls.md`` and ``figures/deltas.png`` (Δ with its interval per condition) under ``out_dir``."""
    out = Path(out_dir)
    plotted = {name: r for name, r in doc["rows"].items()}
    plotted.update({f"{m} (mean)": s for m, s in (doc.get("summaries") or {}).items()})
    figures.plot_deltas(plotted, out / "figures" / "deltas.png")
    text = controls_markdown(doc) + "\n![Δ per condition with 95% CI](figures/deltas.png)\n"
    return atomic.write_text(out / filename, text)
