"""The CorrSteer pipeline: collect -> select -> evaluate -> report, each stage resumable.

A run folder (``RunConfig.out_dir()``) holds, stage by stage:

- ``config.json``: the ``RunConfig`` of the last stage run;
- ``collection/checkpoint.npz`` (+ ``records.jsonl``): accumulators and progress;
- ``selection/selection.json`` + ``selection/vectors.safetensors``;
- ``generations.jsonl``: every test completion, baseline and steered;
- ``results.json`` and ``report.md`` (+ ``figures/``).

Each stage reads what the previous one wrote, so ``corrsteer collect``, ``select``,
``eval`` and ``report`` can run separately; :func:`run` does all four. Validation
and evaluation generate in batches: one batched pass per condition (METHOD.md §5-§6).
Steering acts at the generation positions.

Example:
    >>> from corrsteer.config import RunConfig
    >>> results = run(RunConfig(task="arithmetic", n_train=64, n_test=32, mode="all"))  # doctest: +SKIP
    >>> results["baseline"]["score"], results["steered"]["score"]                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from corrsteer import atomic
from corrsteer.collection import Collection, collect, load_collection
from corrsteer.config import RunConfig
from corrsteer.evaluation import compare
from corrsteer.generation import generate
from corrsteer.hooks import steer
from corrsteer.models import find_layers, load_model, model_id
from corrsteer.records import read_generations_jsonl, write_generations_jsonl
from corrsteer.report import write_report
from corrsteer.selection import Selection, load_selection, save_selection, select
from corrsteer.tasks import get_task

log = logging.getLogger(__name__)

SELECTION_DIR = "selection"
RESULTS_FILE = "results.json"
GENERATIONS_FILE = "generations.jsonl"
CONFIG_FILE = "config.json"


@dataclass
class Resources:
    """What every stage needs, loaded once."""

    model: Any  # a transformers causal LM, eval mode
    tokenizer: Any  # its tokenizer (left padding)
    task: Any  # a corrsteer.tasks.Task
    saes: dict[int, Any]  # layer -> SAE


def d_model_of(model: Any) -> int | None:
    """The residual width of a transformers model (``hidden_size``), or None if it is not stated."""
    cfg = getattr(model, "config", None)
    for c in (cfg, getattr(cfg, "text_config", None)):
        size = getattr(c, "hidden_size", None)
        if isinstance(size, int):
            return size
    return None


def load_saes(spec: str, model: Any, tokenizer: Any, layers: Sequence[int] | None = None,
              progress: bool = True) -> dict[int, Any]:
    """Resolve ``--sae``: a path, a comma list of paths, or ``"default"``.

    Args:
        spec: ``"default"`` (``corrsteer.sae.train.train_default_saes``, cached) or SAE paths.
        model, tokenizer: the model the SAEs are used with.
        layers: keep only these layers (each must have an SAE); None = every SAE given
            (for "default": ``corrsteer.sae.defaults.DEFAULT_LAYERS`` within the model's depth).
        progress: tqdm bars while default SAEs are trained (first use only).

    Returns:
        ``{layer: SAE}`` sorted by layer.

    Raises:
        ValueError: no SAE for a requested layer, an SAE whose layer is unknown, two SAEs
            for one layer, a layer beyond the model's depth, or a width mismatch.
    """
    n_layers = len(find_layers(model))
    if layers is not None:
        bad = [l for l in layers if not 0 <= l < n_layers]
        if bad:
            raise ValueError(f"layers {bad} are out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("sae must be 'default' or one or more SAE paths separated by commas")
    if spec.strip() == "default":
        from corrsteer.sae.defaults import train_default_saes

        saes = dict(train_default_saes(model, tokenizer, layers=None if layers is None else list(layers), cache=True,
                                       progress=progress))
    else:
        from corrsteer.sae.formats import load_sae

        paths = [p.strip() for p in spec.split(",") if p.strip()]
        single_layer = layers[0] if layers is not None and len(layers) == 1 and len(paths) == 1 else None
        saes = {}
        for path in paths:
            sae = load_sae(path, d_model=d_model_of(model), layer=single_layer)
            if sae.layer is None:
                raise ValueError(f"SAE {path!r} does not say which layer it reads; give one --sae path with "
                                 "one --layers L, or save the SAE with its hook_name")
            if sae.layer in saes:
                raise ValueError(f"two SAEs for layer {sae.layer} ({path!r} and an earlier one); give one per layer")
            saes[int(sae.layer)] = sae
    if layers is not None:
        missing = [l for l in layers if l not in saes]
        if missing:
            raise ValueError(f"no SAE for layers {missing}; the SAEs given cover layers {sorted(saes)}")
        saes = {l: saes[l] for l in layers}
    bad = [l for l in saes if not 0 <= l < n_layers]
    if bad:
        raise ValueError(f"SAEs for layers {bad} but the model has {n_layers} layers; load SAEs made for this model")
    if not saes:
        raise ValueError(f"no SAE was found for --sae {spec!r}")
    return dict(sorted(saes.items()))


def load_resources(cfg: RunConfig, *, model: Any = None, tokenizer: Any = None, task: Any = None,
                   saes: Mapping[int, Any] | None = None) -> Resources:
    """Load the model, task and SAEs named by ``cfg`` (anything passed in is used as is)."""
    if model is None or tokenizer is None:
        model, tokenizer = load_model(cfg.model, device=cfg.device)
    model.eval()
    if task is None:
        task = get_task(cfg.task, data_dir=cfg.data_dir, **cfg.task_options)
    if saes is None:
        saes = load_saes(cfg.sae, model, tokenizer, cfg.layers, progress=cfg.progress)
    saes = dict(sorted(saes.items()))
    return Resources(model, tokenizer, task, saes)


def generate_records(res: Resources, samples: Sequence[Any], interventions: Any = None, *, batch_size: int = 16,
                     max_new_tokens: int | None = None, progress: bool = True, desc: str = "generate",
                     condition: str | None = None) -> list[dict[str, Any]]:
    """Greedy completions and rewards for ``samples``, optionally steered.

    Args:
        res: model, tokenizer and task.
        samples: the samples, in order.
        interventions: anything ``corrsteer.hooks.steer`` accepts; None or [] = unsteered.
        batch_size: sequences per batched generation pass.
        max_new_tokens: None = the task's.
        progress: show a tqdm bar with the running score.
        desc: the bar's label.
        condition: stored in each record ("baseline" | "steered") when given.

    Returns:
        One record per sample: ``id, category, prompt, completion, extracted, reward`` + the sample's meta.
    """
    task = res.task
    max_new = task.max_new_tokens if max_new_tokens is None else max_new_tokens
    steering = steer(res.model, interventions, positions="generation") if interventions else contextlib.nullcontext()
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(samples), disable=not progress, desc=desc, unit="sample", dynamic_ncols=True)
    try:
        with torch.inference_mode(), steering:
            for start in range(0, len(samples), batch_size):
                batch = samples[start:start + batch_size]
                prompts = [task.prompt(s, res.tokenizer) for s in batch]
                gens = generate(res.model, res.tokenizer, prompts, max_new, stop_strings=task.stop_strings,
                                batch_size=len(prompts))
                for s, p, g in zip(batch, prompts, gens):
                    rec = {k: v for k, v in dict(s.meta).items()}
                    rec.update(id=s.id, category=s.category, prompt=p, completion=g.completion,
                               extracted=task.extract(s, g.completion), reward=task.reward(s, g.completion))
                    if condition is not None:
                        rec["condition"] = condition
                    records.append(rec)
                bar.update(len(batch))
                bar.set_postfix(score=f"{np.mean([r['reward'] for r in records]):.3f}")
    finally:
        bar.close()
    return records


def make_validator(res: Resources, samples: Sequence[Any], cfg: RunConfig) -> Callable[[Any], float]:
    """``validate(interventions) -> mean reward`` on ``samples``: one batched pass per call."""
    calls = {"n": 0}

    def validate(interventions: Any) -> float:
        calls["n"] += 1
        label = "validate unsteered" if not interventions else f"validate candidate {calls['n'] - 1}"
        recs = generate_records(res, samples, interventions, batch_size=cfg.batch_size,
                                max_new_tokens=cfg.max_new_tokens, progress=cfg.progress, desc=label)
        return float(np.mean([r["reward"] for r in recs]))

    return validate


def correlations_summary(accumulators: Mapping[int, Any], k: int = 5) -> dict[str, dict[str, list]]:
    """Top-k positive and negative features per layer: ``{layer: {"positive": [(i, r, c)], "negative": ...}}``."""
    out = {}
    for layer in sorted(accumulators):
        acc = accumulators[layer]
        if acc.n_positive in (0, acc.n):
            out[str(layer)] = {"positive": [], "negative": []}
            continue
        r, c = acc.correlation(), acc.coefficient()
        entry = {}
        for sign, name in ((1, "positive"), (-1, "negative")):
            idx = np.flatnonzero(r > 0) if sign > 0 else np.flatnonzero(r < 0)
            idx = idx[np.lexsort((idx, -sign * r[idx]))][:k]
            entry[name] = [[int(i), float(r[i]), float(c[i])] for i in idx]
        out[str(layer)] = entry
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, obj, indent=2, default=str)


def stage_collect(cfg: RunConfig, res: Resources, on_checkpoint: Callable[[int], None] | None = None) -> Collection:
    """Collect over ``cfg.n_train`` training samples into ``<out>/collection/``."""
    out = Path(cfg.out_dir())
    _write_json(out / CONFIG_FILE, cfg.to_dict())
    samples = res.task.samples("train", cfg.n_train, seed=cfg.seed)
    from corrsteer.baselines import NEEDS_STATE

    return collect(res.model, res.tokenizer, res.task, res.saes, samples, pool=cfg.pool, positions=cfg.positions,
                   batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, out_dir=out,
                   checkpoint_every=cfg.checkpoint_every, resume=cfg.resume, progress=cfg.progress,
                   on_checkpoint=on_checkpoint, controls=cfg.controls or cfg.method in NEEDS_STATE,
                   control_seed=cfg.seed)


def stage_select(cfg: RunConfig, res: Resources, collection: Collection | None = None) -> Selection:
    """Select features (``cfg.mode``) from the collection and save them to ``<out>/selection/``."""
    out = Path(cfg.out_dir())
    collection = collection if collection is not None else load_collection(out)
    missing = [l for l in collection.accumulators if l not in res.saes]
    if missing:
        raise ValueError(f"the collection in {str(out)!r} has layers {sorted(collection.accumulators)} but SAEs "
                         f"were given for {sorted(res.saes)}; pass the same --sae/--layers as for collect")
    validate = None
    if cfg.mode in ("global", "pruned"):
        validate = make_validator(res, res.task.samples("validation", cfg.n_val, seed=cfg.seed), cfg)
    if cfg.method == "corrsteer":
        sel = select(collection.accumulators, res.saes, cfg.mode, validate=validate, top_k=cfg.top_k, scale=cfg.scale)
    else:
        from corrsteer.baselines import select_method

        sel = select_method(cfg.method, collection, res.saes, cfg.mode, validate=validate, top_k=cfg.top_k,
                            scale=cfg.scale, seed=cfg.seed)
    sel.meta.update(task=res.task.name, model=model_id(res.model), n_val=cfg.n_val if validate else 0,
                    n_train=collection.n)
    save_selection(sel, out / SELECTION_DIR)
    log.info("selection (%s, %s): %s", cfg.mode, sel.method,
             [(f.layer, f.index, f.sign) for f in sel.features] or sorted(sel.vectors) or sel.note)
    return sel


def selection_summary(sel: Selection) -> dict[str, Any]:
    """The selection as results.json and the report show it (one row per candidate's best feature)."""
    n_val = sel.meta.get("n_val") or None
    cands = [{"layer": c.layer, "index": c.features[0].index, "indices": [f.index for f in c.features],
              "sign": "+" if c.sign > 0 else "-", "r": c.features[0].r, "coefficient": c.features[0].coefficient,
              "val_score": c.score, "val_n": n_val if c.score is not None else None, "kept": c.kept}
             for c in sel.candidates]
    return {"mode": sel.mode, "method": sel.method, "top_k": sel.top_k, "scale": sel.scale, "note": sel.note,
            "baseline_val_score": sel.baseline_score, "candidates": cands}


def _task_metrics(task: Any, base: list[dict[str, Any]], steered: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"baseline": task.metrics(...), "steered": ...}``, or ``{}`` when the task has no extra metrics."""
    b, s = task.metrics(base), task.metrics(steered)
    return {"baseline": b, "steered": s} if (b or s) else {}


def stage_eval(cfg: RunConfig, res: Resources, selection: Selection | None = None,
               timings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Evaluate unsteered vs steered on ``cfg.n_test`` test samples; write generations and results.json."""
    out = Path(cfg.out_dir())
    start = time.perf_counter()
    sel = selection if selection is not None else load_selection(out / SELECTION_DIR)
    samples = res.task.samples("test", cfg.n_test, seed=cfg.seed)
    if not samples:
        raise ValueError("n_test is 0: the evaluation needs at least one test sample (--n-test)")
    base = generate_records(res, samples, None, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                            progress=cfg.progress, desc="test unsteered", condition="baseline")
    if sel.vectors:
        steered = generate_records(res, samples, sel.interventions(), batch_size=cfg.batch_size,
                                   max_new_tokens=cfg.max_new_tokens, progress=cfg.progress, desc="test steered",
                                   condition="steered")
    else:
        log.warning("the selection steers nothing (%s); the steered condition equals the baseline", sel.note)
        steered = [dict(r, condition="steered") for r in base]
    write_generations_jsonl(out / GENERATIONS_FILE, base + steered)
    results = compare([r["reward"] for r in base], [r["reward"] for r in steered],
                      [r["category"] for r in base], n_boot=cfg.n_boot, seed=cfg.seed)
    results = {"task": res.task.name, "model": model_id(res.model), "sae": cfg.sae, "mode": sel.mode,
               "method": sel.method, "seed": cfg.seed, **results,
               "features": [{"layer": f.layer, "index": f.index, "sign": "+" if f.sign > 0 else "-", "r": f.r,
                             "coefficient": f.coefficient} for f in sel.features],
               "steered_layers": sorted(sel.vectors),
               "metrics": _task_metrics(res.task, base, steered),
               "selection": selection_summary(sel), "n_train": sel.meta.get("n_train"),
               "n_val": sel.meta.get("n_val"), "n_test": len(samples), "config": cfg.to_dict()}
    try:
        col = load_collection(out)
        results["correlations"] = correlations_summary(col.accumulators)
        results["collection"] = {"n": col.n, "score": col.score, **col.meta}
    except ValueError:
        log.info("no finished collection in %s; results.json has no correlations", out)
    results["timings"] = {**(timings or {}), "eval_s": time.perf_counter() - start}
    _write_json(out / RESULTS_FILE, results)
    return results


def stage_report(out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.md`` and figures from ``<out_dir>/results.json``."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"no results in {str(out_dir)!r} (missing {str(path)!r}); run `corrsteer eval` first")
    results = json.loads(path.read_text())
    return write_report(out_dir, results, results.get("correlations"))


def read_generations(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The baseline and steered test records of a finished run."""
    return read_generations_jsonl(Path(out_dir) / GENERATIONS_FILE)


def run(cfg: RunConfig, *, model: Any = None, tokenizer: Any = None, task: Any = None,
        saes: Mapping[int, Any] | None = None, on_checkpoint: Callable[[int], None] | None = None) -> dict[str, Any]:
    """collect -> select -> evaluate -> report in ``cfg.out_dir()``.

    Args:
        cfg: the run's options (checked here).
        model, tokenizer, task, saes: already-loaded objects to use instead of loading from ``cfg``.
        on_checkpoint: called with the sample offset after each collection checkpoint.

    Returns:
        The results.json dict (see module docstring); ``results["report"]`` is the report path.
    """
    cfg.check()
    t0 = time.perf_counter()
    res = load_resources(cfg, model=model, tokenizer=tokenizer, task=task, saes=saes)
    t1 = time.perf_counter()
    col = stage_collect(cfg, res, on_checkpoint=on_checkpoint)
    t2 = time.perf_counter()
    sel = stage_select(cfg, res, col)
    t3 = time.perf_counter()
    results = stage_eval(cfg, res, sel, timings={"load_s": t1 - t0, "collect_s": t2 - t1, "select_s": t3 - t2})
    results["timings"]["total_s"] = time.perf_counter() - t0
    _write_json(Path(cfg.out_dir()) / RESULTS_FILE, results)
    results["report"] = str(stage_report(cfg.out_dir()))
    return results
