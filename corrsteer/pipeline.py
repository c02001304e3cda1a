"""The CorrSteer pipeline: collect -> select -> evaluate -> report, each stage resumable.

A run folder (``RunConfig.out_dir()``) holds, stage by stage:

- ``config.json``: the ``RunConfig`` of the last stage run;
- ``collection/checkpoint.npz`` (+ ``records.jsonl``): accumulators and progress;
- ``selection/selection.json`` + ``selection/vectors.safetensors``;
- ``generations.jsonl``: every test completion, baseline and steered;
- ``results.json`` and ``report.md`` (+ ``figures/``).

Each stage reads what the previous one wrote, so ``corrsteer collect``, ``select``,
``eval`` and ``report`` can run separately; :func:`run` does all four. Validation
generates every candidate and the unsteered baseline in one batched pass, and
evaluation one batched pass per condition (METHOD.md §5-§6). Steering acts at the
generation positions (``eval --positions all``: every position, as llama.cpp does).

Under torchrun (:mod:`corrsteer.method.distributed`) every rank runs every stage on its
share of the batches and ends each stage with the same result; rank 0 alone writes the
run folder (the collection's window files excepted), so stages run separately need the
folder on a file system every rank sees.

Example:
    >>> from corrsteer.config import RunConfig
    >>> results = run(RunConfig(task="arithmetic", n_train=64, n_test=32, mode="all"))  # doctest: +SKIP
    >>> results["baseline"]["score"], results["steered"]["score"]                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corrsteer.config import RunConfig
from corrsteer.method import distributed
from corrsteer.method.baselines import NEEDS_STATE, select_method
from corrsteer.method.calibration import calibrate_scale
from corrsteer.method.collection import Collection, collect, load_collection
from corrsteer.method.evaluation import evaluate, make_validator
from corrsteer.method.features import Selection
from corrsteer.models import load_model, model_id
from corrsteer.report.markdown import write_report
from corrsteer.report.records import write_generations_jsonl
from corrsteer.report.summaries import correlations_summary, features_summary, selection_summary
from corrsteer.sae import as_saes
from corrsteer.sae.sets import describe_saes, load_saes
from corrsteer.storage.atomic import write_json
from corrsteer.storage.jsonable import to_jsonable
from corrsteer.tasks import get_task

log = logging.getLogger(__name__)

SELECTION_DIR = "selection"
RESULTS_FILE = "results.json"
GENERATIONS_FILE = "generations.jsonl"
CONFIG_FILE = "config.json"


@dataclass
class Resources:
    """What every stage needs, loaded once."""

    model: Any  # the causal LM
    tokenizer: Any  # its tokenizer (left padding)
    task: Any  # the corrsteer.tasks.Task
    saes: dict[int, Any]  # layer -> SAE (empty for eval-only)


STAGES = ("run", "collect", "select", "eval")  # what load_resources prepares for (controls: "run")
_OPTION = {"train": "--n-train", "validation": "--n-val", "test": "--n-test"}


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """Create the run folder ``out`` (and its parents) and prove that a file can be written in it.

    Raises:
        ValueError: ``out`` or one of its parents is a file, or the folder cannot be created or
            written (read-only, no permission, full disk); the message names the path.
    """
    path = Path(out)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            what = "--out" if parent == path else f"--out {str(path)!r}: its parent"
            raise ValueError(f"{what} {str(parent)!r} is a file, not a folder; pass a folder path to --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".corrsteer-probe-"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write in the output folder {str(path)!r} ({exc.strerror or exc}); "
                         "pick a writable folder with --out") from None
    return path


def preflight(cfg: RunConfig, stage: str = "run", task: Any = None) -> Any:
    """Everything about ``cfg`` that can be checked before a model is loaded or an SAE trained.

    In order: the options (``cfg.check()``), ``--data-dir``, the task (its name, options and data
    files, read and validated now), that each split holds the samples the stage draws
    (``--n-train``, ``--n-val`` for global/pruned and ``--scale auto``, ``--n-test``), the collection ``select`` reads
    (present and finished), and that the output folder can be written. (``eval``'s selection is
    read by the caller, which knows which folder it is.)

    Args:
        cfg: the run's options.
        stage: one of ``STAGES``; what the caller is about to do.
        task: an already-built task to check instead of building ``cfg.task``.

    Returns:
        The task, with its splits loaded.

    Raises:
        ValueError: naming the option, file or folder at fault and how to fix it.
    """
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is not one of {STAGES}")
    cfg.check()
    if cfg.data_dir is not None and not Path(cfg.data_dir).expanduser().is_dir():
        what = "is a file" if Path(cfg.data_dir).expanduser().exists() else "does not exist"
        raise ValueError(f"--data-dir {cfg.data_dir!r} {what}; pass the folder that holds the task's data")
    if task is None:
        task = get_task(cfg.task, data_dir=cfg.data_dir, **cfg.task_options)
    need = {"train": cfg.n_train if stage in ("run", "collect") else 0,
            "validation": cfg.n_val if stage in ("run", "select") and (cfg.mode in ("global", "pruned")
                                                                      or cfg.scale == "auto") else 0,
            "test": cfg.n_test if stage in ("run", "eval") else 0}
    if stage in ("run", "eval") and cfg.n_test < 1:
        raise ValueError("--n-test is 0: the evaluation needs at least one test sample")
    splits = task.splits() if any(need.values()) else {}
    for split, n in need.items():
        if n and n > len(splits[split]):
            raise ValueError(f"{_OPTION[split]} {n} is more than the {split} split of task {task.name!r} holds "
                             f"({len(splits[split])} samples); pass {_OPTION[split]} {len(splits[split])} or less")
    whole = [split for split, n in need.items() if n and n == len(splits[split])]
    if whole and cfg.seed != 0 and "split_seed" not in cfg.task_options:
        # a seed meant as a replication would test the same samples again (XSTest: the README's finding)
        log.warning("%s take(s) the whole %s split(s) of task %r, so --seed %d only reorders the samples of "
                    "seed 0: a run with another seed is not a replication there. For other samples carve other "
                    "splits: --task-option split_seed=%d", ", ".join(f"{_OPTION[s]} {need[s]}" for s in whole),
                    "/".join(whole), task.name, cfg.seed, cfg.seed)
    out = Path(cfg.out_dir())
    if stage == "select":
        load_collection(out)  # missing or unfinished: ValueError naming the folder and the command to run
    check_out_dir(out)
    return task


def load_resources(cfg: RunConfig, *, model: Any = None, tokenizer: Any = None, task: Any = None,
                   saes: Mapping[int, Any] | None = None, stage: str = "run") -> Resources:
    """Check ``cfg`` for ``stage`` (:func:`preflight`), then load the model, task and SAEs it names.

    Anything passed in is used as is. ``select`` with ``--sae default`` and no ``--layers`` loads the
    SAEs of the collection's layers only.
    """
    task = preflight(cfg, stage, task)  # bad options, data, splits or folders fail before the model loads
    if model is None or tokenizer is None:
        model, tokenizer = load_model(cfg.model, device=distributed.device_for(cfg.device))
    model.eval()
    if saes is None:
        layers = cfg.layers
        if stage == "select" and layers is None:
            layers = tuple(sorted(load_collection(Path(cfg.out_dir())).accumulators))
        saes = load_saes(cfg.sae, model, tokenizer, layers, progress=cfg.progress, train=cfg.train,
                         data_dir=cfg.data_dir)
    return Resources(model, tokenizer, task, dict(sorted(as_saes(saes).items())))


def write_results(path: Path, obj: Any) -> Path:
    """Write a JSON document of the run folder atomically (the folder is created); rank 0 only."""
    if not distributed.current().is_main:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, to_jsonable(obj, fallback=str), indent=2)


def validator(cfg: RunConfig, res: Resources) -> Callable[[Any], float] | None:
    """The validation callable of ``cfg.mode`` (global/pruned), else None."""
    if cfg.mode not in ("global", "pruned"):
        return None
    samples = res.task.samples("validation", cfg.n_val, seed=cfg.seed)
    return make_validator(res.model, res.tokenizer, res.task, samples, batch_size=cfg.batch_size,
                          max_new_tokens=cfg.max_new_tokens, progress=cfg.progress)


def stage_collect(cfg: RunConfig, res: Resources, on_checkpoint: Callable[[int], None] | None = None,
                  control_draws: int = 1) -> Collection:
    """Collect over ``cfg.n_train`` training samples into ``<out>/collection/``.

    ``control_draws``: shuffled-reward draws kept when the controls' state is collected.
    """
    out = Path(cfg.out_dir())
    write_results(out / CONFIG_FILE, cfg.to_dict())
    samples = res.task.samples("train", cfg.n_train, seed=cfg.seed)
    return collect(res.model, res.tokenizer, res.task, res.saes, samples, pool=cfg.pool, positions=cfg.positions,
                   batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, out_dir=out,
                   checkpoint_every=cfg.checkpoint_every, resume=cfg.resume, progress=cfg.progress,
                   on_checkpoint=on_checkpoint, controls=cfg.controls or cfg.method in NEEDS_STATE,
                   control_seed=cfg.seed, control_draws=control_draws)


def stage_select(cfg: RunConfig, res: Resources, collection: Collection | None = None) -> Selection:
    """Select features (``cfg.mode``, ``cfg.method``) from the collection and save them to ``<out>/selection/``."""
    out = Path(cfg.out_dir())
    collection = collection if collection is not None else load_collection(out)
    missing = [l for l in collection.accumulators if l not in res.saes]
    if missing:
        raise ValueError(f"the collection in {str(out)!r} has layers {sorted(collection.accumulators)} but SAEs "
                         f"were given for {sorted(res.saes)}; pass the same --sae/--layers as for collect")
    validate = validator(cfg, res)
    sel = select_method(cfg.method, collection, res.saes, cfg.mode, validate=validate, top_k=cfg.top_k,
                        scale=1.0 if cfg.scale == "auto" else cfg.scale, seed=cfg.seed,
                        negative_coefficient=cfg.negative_coefficient)
    calibrate(cfg, res, sel)
    sel.meta.update(task=res.task.name, model=model_id(res.model), n_val=cfg.n_val if validate else 0,
                    n_train=collection.n, saes=describe_saes(res.saes))
    if distributed.current().is_main:
        sel.save(out / SELECTION_DIR)
    log.info("selection (%s, %s): %s", cfg.mode, sel.method,
             [(f.layer, f.index, f.sign) for f in sel.features] or sel.layers or sel.note)
    return sel


def calibrate(cfg: RunConfig, res: Resources, sel: Selection) -> None:
    """With ``scale="auto"``: set ``sel.scale`` to the calibrated scale and keep the curve in ``sel.meta``."""
    if cfg.scale != "auto":
        return
    samples = res.task.samples("validation", cfg.n_val, seed=cfg.seed)
    sel.scale, sel.meta["scale_curve"] = calibrate_scale(res.model, res.tokenizer, res.task, sel, samples,
                                                         cfg.scale_grid, batch_size=cfg.batch_size,
                                                         max_new_tokens=cfg.max_new_tokens, progress=cfg.progress)
    log.info("scale auto: %g (validation curve %s)", sel.scale,
             [(p["scale"], round(p["score"], 3)) for p in sel.meta["scale_curve"]])


def stage_eval(cfg: RunConfig, res: Resources, selection: Selection | None = None,
               timings: Mapping[str, float] | None = None, positions: str = "generation",
               command: str | None = None) -> dict[str, Any]:
    """Evaluate unsteered vs steered on ``cfg.n_test`` test samples; write generations and results.json.

    ``positions``: where the selection steers, ``"generation"`` (METHOD.md §2) or ``"all"``
    (the prompt too, as a llama.cpp control vector does). ``command`` (the command line that
    made the run) is recorded in results.json and the report.
    """
    out = Path(cfg.out_dir())
    start = time.perf_counter()
    sel = selection if selection is not None else Selection.load(out / SELECTION_DIR)
    samples = res.task.samples("test", cfg.n_test, seed=cfg.seed)
    if not samples:
        raise ValueError("n_test is 0: the evaluation needs at least one test sample (--n-test)")
    ev = evaluate(res.model, res.tokenizer, res.task, sel, samples, positions=positions, batch_size=cfg.batch_size,
                  max_new_tokens=cfg.max_new_tokens, n_boot=cfg.n_boot, seed=cfg.seed, progress=cfg.progress)
    if distributed.current().is_main:
        write_generations_jsonl(out / GENERATIONS_FILE, ev.baseline + ev.steered)
    results = {"task": res.task.name, "model": model_id(res.model), "sae": cfg.sae, "mode": sel.mode,
               "method": sel.method, "seed": cfg.seed, "positions": positions, **ev.comparison,
               "features": features_summary(sel),
               "steered_layers": sel.layers, "metrics": ev.metrics, "selection": selection_summary(sel),
               "n_train": sel.meta.get("n_train"), "n_val": sel.meta.get("n_val"), "n_test": len(samples),
               "saes": sel.meta.get("saes"), "config": cfg.to_dict(),
               "command": command or f"corrsteer.run({cfg!r})"}
    try:
        col = load_collection(out)
        results["correlations"] = correlations_summary(col.accumulators)
        results["collection"] = {"n": col.n, "score": col.score, **col.meta}
    except ValueError:
        log.info("no finished collection in %s; results.json has no correlations", out)
    results["timings"] = {**(timings or {}), "eval_s": time.perf_counter() - start,
                          "ranks": distributed.current().size}
    write_results(out / RESULTS_FILE, results)
    return results


def stage_report(out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.md`` and figures from ``<out_dir>/results.json``."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"no results in {str(out_dir)!r} (missing {str(path)!r}); run `corrsteer eval` first")
    results = json.loads(path.read_text(encoding="utf-8"))
    return write_report(out_dir, results, results.get("correlations"))


def run(cfg: RunConfig, *, model: Any = None, tokenizer: Any = None, task: Any = None,
        saes: Mapping[int, Any] | None = None, on_checkpoint: Callable[[int], None] | None = None,
        command: str | None = None) -> dict[str, Any]:
    """collect -> select -> evaluate -> report in ``cfg.out_dir()``.

    Args:
        cfg: the run's options (checked here).
        model, tokenizer, task, saes: already-loaded objects to use instead of loading from ``cfg``.
        on_checkpoint: called with the sample offset after each collection checkpoint.
        command: the command line that made the run, for the report (default: this call).

    Returns:
        The results.json dict; ``results["report"]`` is the report path.
    """
    cfg.check()
    t0 = time.perf_counter()
    res = load_resources(cfg, model=model, tokenizer=tokenizer, task=task, saes=saes)
    t1 = time.perf_counter()
    col = stage_collect(cfg, res, on_checkpoint=on_checkpoint)
    t2 = time.perf_counter()
    sel = stage_select(cfg, res, col)
    t3 = time.perf_counter()
    results = stage_eval(cfg, res, sel, timings={"load_s": t1 - t0, "collect_s": t2 - t1, "select_s": t3 - t2},
                         command=command)
    results["timings"]["total_s"] = time.perf_counter() - t0
    write_results(Path(cfg.out_dir()) / RESULTS_FILE, results)
    if distributed.current().is_main:
        results["report"] = str(stage_report(cfg.out_dir()))
    return results
