"""CorrSteer against its controls and baselines on one task: one collection, one table.

:func:`run_controls` collects once (the CorrSteer accumulators and the controls' extra
state, :mod:`corrsteer.method.control_state`, in the same pass), selects CorrSteer and
every control/baseline (:mod:`corrsteer.method.baselines`), generates the unsteered test
split once and each steered condition on the same samples, and writes one table
(``controls.md``, ``controls.json``, ``figures/deltas.png``) of all of them.

Example:
    >>> rows = run_controls(RunConfig(task="bbq_ambig", n_train=300, n_test=150))   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from corrsteer import pipeline
from corrsteer.config import check_method
from corrsteer.method import distributed
from corrsteer.method.baselines import select_method
from corrsteer.method.evaluation import evaluate, generate_records
from corrsteer.models import model_id
from corrsteer.report.markdown import write_comparison_report
from corrsteer.report.records import write_generations_jsonl
from corrsteer.report.summaries import features_summary

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("random", "shuffled", "negative", "diff-in-means", "mi", "fisher",
                   "scale-0.5", "scale-1.5", "scale-2")
CONTROLS_JSON = "controls.json"
CONTROLS_MD = "controls.md"


def describe(sel: Any) -> str:
    """What a selection steers, in one cell: ``L3 +#12 (c=+1.9); L6 −#40 (c=−2.2)`` or the vectors' layers."""
    if sel.features:
        return "; ".join(f"L{f.layer} {'+' if f.sign > 0 else '−'}#{f.index} (c={f.coefficient:+.3g})"
                         for f in sel.features)
    if sel.layers:
        norms = sel.meta.get("norms", {})
        return "; ".join(f"L{l} vector (norm {norms.get(str(l), {}).get('steered', float('nan')):.3g})"
                         for l in sel.layers)
    return f"nothing ({sel.note or 'no feature selected'})"


def run_controls(cfg: Any, methods: Sequence[str] = DEFAULT_METHODS, *, model: Any = None, tokenizer: Any = None,
                 task: Any = None, saes: Mapping[int, Any] | None = None) -> dict[str, Any]:
    """CorrSteer against its controls and baselines on one task: one collection, one table.

    Args:
        cfg: a ``RunConfig`` (task, model, SAEs, counts, mode, scale, seed, out); its
            ``method`` is ignored (every method runs).
        methods: the methods besides CorrSteer (``corrsteer.method.baselines``; ``scale-S`` too).
        model, tokenizer, task, saes: already-loaded objects to use instead of loading.

    Returns:
        The ``controls.json`` dict: ``rows`` ``{method: compare() dict + features, layers,
        note, selection}``, ``timings``, ``config``, ``report`` (path of controls.md).
    """
    methods = [check_method(m) for m in methods if m != "corrsteer"]
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods {list(methods)} lists a method twice")
    cfg = cfg.replace(controls=True).check()  # the caller's config is left as it was
    out = Path(cfg.out_dir())
    main = distributed.current().is_main  # under torchrun every rank computes, rank 0 writes
    t0 = time.perf_counter()
    res = pipeline.load_resources(cfg, model=model, tokenizer=tokenizer, task=task, saes=saes)
    t1 = time.perf_counter()
    col = pipeline.stage_collect(cfg, res)
    t2 = time.perf_counter()
    validate = pipeline.validator(cfg, res)
    sels = {"corrsteer": select_method("corrsteer", col, res.saes, cfg.mode, validate, cfg.top_k, cfg.scale,
                                       cfg.seed)}
    for m in methods:
        sels[m] = select_method(m, col, res.saes, cfg.mode, validate, cfg.top_k, cfg.scale, cfg.seed,
                                reference=sels["corrsteer"])
    for name, sel in sels.items():
        sel.meta.update(task=res.task.name, n_train=col.n)
        if main:
            sel.save(out / "methods" / name / "selection")
    t3 = time.perf_counter()
    samples = res.task.samples("test", cfg.n_test, seed=cfg.seed)
    if not samples:
        raise ValueError("n_test is 0: the controls table needs test samples (--n-test)")
    opts = dict(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, n_boot=cfg.n_boot, seed=cfg.seed,
                progress=cfg.progress)
    base = generate_records(res.model, res.tokenizer, res.task, samples, None, batch_size=cfg.batch_size,
                            max_new_tokens=cfg.max_new_tokens, progress=cfg.progress, desc="test unsteered",
                            condition="baseline")
    if main:
        write_generations_jsonl(out / "generations_baseline.jsonl", base)
    rows: dict[str, Any] = {}
    for name, sel in sels.items():
        ev = evaluate(res.model, res.tokenizer, res.task, sel, samples, baseline=base, label=name, **opts)
        if main:
            write_generations_jsonl(out / "methods" / name / "generations.jsonl", ev.baseline + ev.steered)
        row = dict(ev.comparison)
        row.update(method=name, features=features_summary(sel), steered_layers=sel.layers, steers=describe(sel),
                   note=sel.note, metrics=ev.metrics, selection_meta=sel.meta)
        rows[name] = row
        log.info("controls: %s delta %+.4f", name, row["delta"])
    t4 = time.perf_counter()
    timings = {"load_s": t1 - t0, "collect_s": t2 - t1, "select_s": t3 - t2, "eval_s": t4 - t3,
               "total_s": time.perf_counter() - t0}
    doc = {"task": res.task.name, "model": model_id(res.model), "sae": cfg.sae, "mode": cfg.mode,
           "seed": cfg.seed, "n_train": col.n, "n_test": len(samples), "collection_score": col.score,
           "rows": rows, "timings": timings, "config": cfg.to_dict()}
    pipeline.write_results(out / CONTROLS_JSON, doc)
    if not main:
        return doc
    title = (f"CorrSteer vs controls and baselines: {res.task.name} · {doc['model']} · mode {cfg.mode} · "
             f"n_train {col.n} · n_test {len(samples)}")
    path = write_comparison_report(out, rows, title=title, filename=CONTROLS_MD)
    lines = ["", "## What each method steers", "", "| method | steers |", "|---|---|"]
    lines += [f"| {name} | {r['steers'].replace('|', '/')} |" for name, r in rows.items()]
    lines += ["", f"Timings: collect {timings['collect_s']:.0f} s, select {timings['select_s']:.0f} s, "
              f"evaluate {timings['eval_s']:.0f} s, total {timings['total_s']:.0f} s.", ""]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    doc["report"] = str(path)
    return doc
