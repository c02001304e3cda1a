"""CorrSteer against its controls and baselines on one task: one collection, one table.

:func:`run_controls` collects once (the CorrSteer accumulators and the controls' extra
state, :mod:`corrsteer.method.control_state`, in the same pass), selects CorrSteer and
every control/baseline (:mod:`corrsteer.method.baselines`), generates the unsteered test
split once and each steered condition on the same samples, and writes one table
(``controls.md``, ``controls.json``, ``figures/deltas.png``) of all of them.

The two controls that say whether an effect is CorrSteer's are drawn several times
(``draws``, 3 by default): ``random`` (other features of the same layers, same signed
coefficients) and ``shuffled`` (features selected from accumulators fed permuted
rewards). One draw can look like an effect or hide one (on a sentiment reward one random
draw gave +11 pp, p = 0.015, and two others −1 and 0), so every draw is a row, their mean
is a row with a bootstrap interval and a sign-flip p, and CorrSteer is compared with the
draws' mean on the same prompts. Every steered row also gets a fluency figure: the share
of degenerate continuations (:mod:`corrsteer.method.fluency`) and, with ``perplexity``,
the unsteered model's perplexity of them.

Example:
    >>> doc = run_controls(RunConfig(task="food", n_train=200, n_test=100), ("random", "shuffled"))  # doctest: +SKIP
    >>> doc["versus"]["random"]["delta"]                                                            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from corrsteer import pipeline
from corrsteer.config import check_method
from corrsteer.method.baselines import select_method
from corrsteer.method.evaluation import evaluate, generate_records
from corrsteer.method.fluency import degenerate_rate, unsteered_perplexity
from corrsteer.method.statistics import compare_draws, paired_difference
from corrsteer.models import model_id
from corrsteer.report.controls import write_controls_report
from corrsteer.report.records import write_generations_jsonl
from corrsteer.report.summaries import features_summary
from corrsteer.sae.sets import describe_saes

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("random", "shuffled", "negative", "diff-in-means", "mi", "fisher",
                   "scale-0.5", "scale-1.5", "scale-2")
DRAWN = ("random", "shuffled")  # the controls drawn several times
CONTROLS_JSON = "controls.json"
CONTROLS_MD = "controls.md"


def example_pairs(base: Sequence[Mapping[str, Any]], steered: Sequence[Mapping[str, Any]],
                  k: int = 3) -> list[dict[str, Any]]:
    """Up to ``k`` samples whose completion steering changed, rewarded changes (0 -> 1) first, in sample order."""
    changed = [(i, b, s) for i, (b, s) in enumerate(zip(base, steered)) if b["completion"] != s["completion"]]
    changed.sort(key=lambda t: (not (t[1]["reward"] == 0 and t[2]["reward"] == 1), t[0]))
    return [{"id": b["id"], "prompt": b["prompt"], "unsteered": b["completion"], "steered": s["completion"],
             "reward": [b["reward"], s["reward"]]} for _, b, s in changed[:k]]


def run_controls(cfg: Any, methods: Sequence[str] = DEFAULT_METHODS, *, draws: int = 3, perplexity: bool = False,
                 model: Any = None, tokenizer: Any = None, task: Any = None,
                 saes: Mapping[int, Any] | None = None, command: str | None = None) -> dict[str, Any]:
    """CorrSteer against its controls and baselines on one task: one collection, one table.

    Args:
        cfg: a ``RunConfig`` (task, model, SAEs, counts, mode, scale, seed, out); its
            ``method`` is ignored (every method runs). It is not modified.
        methods: the methods besides CorrSteer (``corrsteer.method.baselines``; ``scale-S`` too).
        draws: how many times ``random`` and ``shuffled`` are drawn (>= 1).
        perplexity: also compute the unsteered model's perplexity of every condition's
            completions (one forward pass per batch and condition).
        model, tokenizer, task, saes: already-loaded objects to use instead of loading.
        command: the command line that made the run, for the report.

    Returns:
        The ``controls.json`` dict: ``rows`` ``{condition: compare() dict + features, fluency,
        ...}`` (one per draw of a drawn control), ``summaries`` (each drawn control's mean
        over its draws), ``versus`` (CorrSteer minus each drawn control, paired), ``examples``,
        ``timings``, ``config``, ``report`` (path of controls.md).
    """
    methods = [check_method(m) for m in methods if m != "corrsteer"]
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods {list(methods)} lists a method twice")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws={draws!r} must be a positive integer")
    cfg = cfg.replace(controls=True).check()  # the caller's config is left as it was
    out = Path(cfg.out_dir())
    t0 = time.perf_counter()
    res = pipeline.load_resources(cfg, model=model, tokenizer=tokenizer, task=task, saes=saes)
    t1 = time.perf_counter()
    col = pipeline.stage_collect(cfg, res, control_draws=draws if "shuffled" in methods else 1)
    t2 = time.perf_counter()
    validate = pipeline.validator(cfg, res)
    opts = dict(mode=cfg.mode, validate=validate, top_k=cfg.top_k, scale=cfg.scale, seed=cfg.seed,
                negative_coefficient=cfg.negative_coefficient)
    sels = {"corrsteer": select_method("corrsteer", col, res.saes, **opts)}
    for m in methods:
        for d in range(draws if m in DRAWN else 1):
            sels[f"{m} #{d}" if m in DRAWN else m] = select_method(m, col, res.saes, reference=sels["corrsteer"],
                                                                   draw=d, **opts)
    for name, sel in sels.items():
        sel.meta.update(task=res.task.name, n_train=col.n, saes=describe_saes(res.saes))
        sel.save(out / "methods" / name.replace(" #", "-") / "selection")
    t3 = time.perf_counter()
    samples = res.task.samples("test", cfg.n_test, seed=cfg.seed)
    if not samples:
        raise ValueError("n_test is 0: the controls table needs test samples (--n-test)")
    gen = dict(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, progress=cfg.progress)
    base = generate_records(res.model, res.tokenizer, res.task, samples, None, desc="test unsteered",
                            condition="baseline", **gen)
    write_generations_jsonl(out / "generations_baseline.jsonl", base)
    fluency = {"unsteered": _fluency(res, base, perplexity)}
    rows: dict[str, Any] = {}
    steered: dict[str, list[int]] = {}
    examples: list[dict[str, Any]] = []
    for name, sel in sels.items():
        ev = evaluate(res.model, res.tokenizer, res.task, sel, samples, baseline=base, label=name,
                      n_boot=cfg.n_boot, seed=cfg.seed, **gen)
        write_generations_jsonl(out / "methods" / name.replace(" #", "-") / "generations.jsonl",
                                ev.baseline + ev.steered)
        fluency[name] = _fluency(res, ev.steered, perplexity)
        rows[name] = dict(ev.comparison, method=name, features=features_summary(sel), steered_layers=sel.layers,
                          steers=sel.describe(), note=sel.note, metrics=ev.metrics, selection_meta=sel.meta,
                          fluency=fluency[name])
        steered[name] = [r["reward"] for r in ev.steered]
        if name == "corrsteer":
            examples = example_pairs(base, ev.steered)
        log.info("controls: %s delta %+.4f", name, rows[name]["delta"])
    rewards = [r["reward"] for r in base]
    summaries, versus = {}, {}
    for m in DRAWN:
        names = [n for n in rows if n.startswith(f"{m} #")]
        if names:
            summaries[m] = compare_draws(rewards, [steered[n] for n in names], n_boot=cfg.n_boot, seed=cfg.seed)
            mean_draw = [sum(steered[n][i] for n in names) / len(names) for i in range(len(rewards))]
            versus[m] = paired_difference(steered["corrsteer"], mean_draw, n_boot=cfg.n_boot, seed=cfg.seed)
    t4 = time.perf_counter()
    timings = {"load_s": t1 - t0, "collect_s": t2 - t1, "select_s": t3 - t2, "eval_s": t4 - t3,
               "total_s": time.perf_counter() - t0}
    doc = {"task": res.task.name, "model": model_id(res.model), "sae": cfg.sae, "mode": cfg.mode,
           "seed": cfg.seed, "n_train": col.n, "n_test": len(samples), "collection_score": col.score,
           "draws": draws, "rows": rows, "summaries": summaries, "versus": versus, "fluency": fluency,
           "examples": examples, "saes": sels["corrsteer"].meta.get("saes"), "timings": timings,
           "config": cfg.to_dict(), "command": command or f"corrsteer.studies.controls.run_controls({cfg!r})"}
    pipeline.write_results(out / CONTROLS_JSON, doc)
    doc["report"] = str(write_controls_report(out, doc, CONTROLS_MD))
    return doc


def _fluency(res: Any, records: Sequence[Mapping[str, Any]], perplexity: bool) -> dict[str, float]:
    out = {"degenerate": degenerate_rate(records)}
    if perplexity:
        out["perplexity"] = unsteered_perplexity(res.model, res.tokenizer, [r["prompt"] for r in records],
                                                 [r["completion"] for r in records])
    return out
