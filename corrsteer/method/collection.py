"""Collection: one batched greedy generation pass -> per-layer correlation accumulators.

For N training samples, generate greedily in left-padded batches with the SAEs of
every requested layer capturing at once (METHOD.md §2-§3: pooled over the
generation positions, each sequence stopping at EOS or a task stop string), score
each completion with the task's reward, and fold ``(z, y)`` into one
``CorrelationAccumulator`` per layer (METHOD.md §4).

Windows: the samples are cut into windows of ``checkpoint_every``; batches never
straddle a window boundary; each window fills fresh accumulators, which are merged
into the total in window order. The result is thus a function of the samples and the
settings alone, not of who collected which window: one process, or several ranks
under torchrun (:mod:`corrsteer.method.distributed`) that each collect a contiguous run
of windows, give the same bytes.

Checkpoint and resume: one process writes the total so far to
``<out_dir>/collection/checkpoint.npz`` after each window (one atomic replace); several
ranks write each finished window to ``collection/windows/`` and rank 0 merges them at the
end (:mod:`corrsteer.method.checkpoints`). A resume takes both up and collects only the
windows that are missing, dealt out afresh among the ranks (so a resume with another
number of ranks is correct too), and ends with byte-identical accumulators. A resume
whose fingerprint (task, model, SAEs, sample ids, pool, positions, batch size, ...)
differs from the checkpoint's is refused.

Example:
    >>> col = collect(model, tok, task, saes, task.samples("train", 256), out_dir="runs/x")  # doctest: +SKIP
    >>> col.accumulators[6].top(1)                                                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from corrsteer.config import POOLS, POSITIONS, check_choice, fingerprint
from corrsteer.errors import CorrsteerError
from corrsteer.method import distributed
from corrsteer.method.checkpoints import (
    CHECKPOINT_FILE,
    COLLECTION_DIR,
    RECORDS_FILE,
    Collection,
    checkpoint_bytes,
    fold,
    load_checkpoint,
    load_collection,
    mismatch,
    read_checkpoint,
    remove_stale_temps,
    run_fingerprint,
    sae_digest,
    save_checkpoint,
    window_files,
    window_path,
    write_records,
)
from corrsteer.method.window import Job, windows
from corrsteer.sae import as_saes
from corrsteer.storage import atomic

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FILE", "COLLECTION_DIR", "RECORDS_FILE", "Collection", "collect", "load_checkpoint",
           "load_collection", "remove_stale_temps", "run_fingerprint", "sae_digest", "save_checkpoint", "windows"]


def collect(model: Any, tokenizer: Any, task: Any, saes: Mapping[int, Any], samples: Sequence[Any], *,
            pool: str | None = None, positions: str = "generation", batch_size: int = 16,
            max_new_tokens: int | None = None, out_dir: str | os.PathLike[str] | None = None,
            checkpoint_every: int = 256, resume: bool = False, progress: bool = True,
            on_checkpoint: Callable[[int], None] | None = None, controls: bool = False,
            control_seed: int = 0, control_draws: int = 1, world: distributed.World | None = None) -> Collection:
    """Generate over ``samples`` once and fill one accumulator per layer.

    Args:
        model, tokenizer: a causal LM and its tokenizer (left padding, pad token set).
        task: a ``corrsteer.tasks.Task`` (prompt, stop strings, reward).
        saes: layer -> SAE; every layer is captured in the same pass.
        samples: the training samples, in order.
        pool: ``"max"`` or ``"mean"`` (None: ``task.default_pool``).
        positions: ``"generation"`` (METHOD.md §2) or ``"all"`` (prompt too; ablation).
        batch_size: sequences per generation batch.
        max_new_tokens: generation length (None: ``task.max_new_tokens``).
        out_dir: run folder for checkpoints (None: no checkpoints).
        checkpoint_every: samples per window; batches end at window boundaries, and a
            checkpoint (or, with several ranks, a window file) is written after each window.
        resume: continue from what ``<out_dir>/collection/`` holds, if anything.
        progress: show a tqdm bar with the running score (rank 0 only).
        on_checkpoint: called with the sample offset after each checkpoint or window file is written.
        controls: also fill ``Collection.controls`` (shuffled-reward, per-class and
            residual-mean accumulators, ``corrsteer.studies.controls``) in the same pass.
        control_seed: seed of the shuffled-reward permutations.
        control_draws: how many shuffled-reward permutations to keep (one control each).
        world: the ranks sharing the work (None: :func:`corrsteer.method.distributed.current`).

    Returns:
        ``Collection`` with accumulators ``{layer: (d_sae,) state}`` and per-sample records,
        the same on every rank.

    Raises:
        ValueError: bad option, no samples, more ranks than samples, ranks with other
            settings, or a resume whose fingerprint differs.
    """
    world = distributed.current() if world is None else world
    pool = task.default_pool if pool is None else pool
    check_choice("pool", pool, POOLS)
    check_choice("positions", positions, POSITIONS)
    if not samples:
        raise ValueError("samples is empty: collection needs at least one training sample (check --n-train)")
    if not saes:
        raise ValueError("saes is empty: give at least one layer's SAE")
    saes = as_saes(saes)  # SAELens SAEs too
    for name, value in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if world.size > len(samples):
        raise ValueError(f"{world.size} ranks share {len(samples)} training samples: every rank needs at least one; "
                         f"launch at most {len(samples)} processes or collect more samples (--n-train)")
    max_new_tokens = task.max_new_tokens if max_new_tokens is None else max_new_tokens
    layers = sorted(saes)
    fp = run_fingerprint(model, task, saes, samples, pool, positions, batch_size, max_new_tokens, checkpoint_every)
    if controls:
        fp["controls"] = {"seed": int(control_seed)}  # only then: checkpoints without controls keep their fingerprint
        if control_draws != 1:
            fp["controls"]["draws"] = int(control_draws)
    world.check_same({**fp, "resume": bool(resume)}, "the collection's settings")
    spans = windows(len(samples), checkpoint_every)
    if world.size > len(spans) and world.is_main:
        log.warning("%d ranks share %d windows of %d samples: %d ranks will idle; lower --checkpoint-every to "
                    "%d or less to give every rank a window", world.size, len(spans), checkpoint_every,
                    world.size - len(spans), max(1, len(samples) // world.size))
    job = Job(model, tokenizer, task, saes, samples, pool, positions, batch_size, max_new_tokens, fp,
              {"pool": pool, "positions": positions, "layers": layers, "n": len(samples), "task": task.name},
              control_seed if controls else None, spans, control_draws)
    folder = Path(out_dir) / COLLECTION_DIR if out_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    total, k, holder = _resume_state(job, folder, resume, world)
    start = time.perf_counter()
    remaining = [j for j in range(k, len(spans)) if j not in holder]
    mine = [remaining[i] for i in world.share(len(remaining))] if world.size > 1 else remaining
    bar = tqdm(total=len(samples) if world.size == 1 else sum(spans[j][1] - spans[j][0] for j in mine),
               initial=total.n if world.size == 1 else 0, disable=not (progress and world.is_main),
               desc=f"collect {task.name}", unit="sample", dynamic_ncols=True)
    try:
        if world.size == 1:
            for j in range(k, len(spans)):
                win = _load_window(holder[j], job, j) if j in holder else job.window(j, bar)
                if j in holder:
                    bar.update(win.n)
                fold(total, win)
                total.complete = j == len(spans) - 1
                if folder is not None:
                    save_checkpoint(folder / CHECKPOINT_FILE, total, spans[j][1])
                    log.debug("checkpoint at sample %d written to %s", spans[j][1], folder / CHECKPOINT_FILE)
                if on_checkpoint is not None:
                    on_checkpoint(spans[j][1])
        else:
            total = _collect_shared(job, total, holder, k, mine, folder, world, bar, on_checkpoint)
    finally:
        bar.close()
    total.complete = True
    total.meta = job.meta
    total.seconds = time.perf_counter() - start
    if folder is not None:
        if world.is_main:
            write_records(folder / RECORDS_FILE, total.records)
        for path in window_files(folder).values():  # checkpoint.npz holds them all now
            path.unlink(missing_ok=True)
    log.info("collected %d samples at layers %s: score %.4f (%d positive) in %.1f s", total.n, layers, total.score,
             sum(r["reward"] for r in total.records), total.seconds)
    return total


def _windows_done(total: Collection, spans: list[tuple[int, int]]) -> int:
    """How many windows ``total`` holds (its records end at a window boundary)."""
    ends = [b for _, b in spans]
    if total.n == 0:
        return 0
    if total.n not in ends:
        raise CorrsteerError(f"the collection checkpoint stops at sample {total.n}, which is not the end of a window "
                             f"of {spans[0][1] - spans[0][0]}; delete it and collect again")
    return ends.index(total.n) + 1


def _resume_state(job: Job, folder: Path | None, resume: bool,
                  world: distributed.World) -> tuple[Collection, int, dict[int, Any]]:
    """The total so far (rank 0's checkpoint.npz) and who holds which finished window file.

    Without ``resume`` every rank deletes the window files it sees (before any rank can
    write one of this run: the exchange that follows is a barrier).

    Returns:
        ``(total, k, holder)``: on rank 0 the total of the first ``k`` windows (empty
        elsewhere), ``k`` (the same on every rank), and ``{j: rank}`` (one process:
        ``{j: path}``) for the windows past the total that a window file holds.
    """
    ckpt = folder / CHECKPOINT_FILE if folder is not None else None
    box: dict[str, Any] = {"total": job.empty()}

    def look() -> tuple[int | None, list[int]]:
        if ckpt is None:
            return None, []
        if world.is_main:  # before any rank writes: nothing of this run can be mid-write yet
            for target in (ckpt, folder / RECORDS_FILE):
                remove_stale_temps(target)
            remove_stale_temps(window_path(folder, 0), any_window=True)
        if not resume:
            for path in window_files(folder).values():
                path.unlink(missing_ok=True)
            if world.is_main and ckpt.is_file():
                log.warning("overwriting the collection checkpoint %s (pass resume=True / --resume to continue it)",
                            ckpt)
                if world.size > 1:  # rank 0 writes it only at the end: a stale one must not outlive this run
                    ckpt.unlink()
            return None, []
        k = None
        if world.is_main and ckpt.is_file():
            old, _ = load_checkpoint(ckpt)
            _check_fingerprint(old.fingerprint, job.fp, ckpt)
            old.meta = dict(job.meta)
            box["total"] = old
            k = len(job.spans) if old.complete else _windows_done(old, job.spans)
        files = window_files(folder)
        for j, path in files.items():
            if j >= len(job.spans):
                raise ValueError(f"{str(path)!r} is window {j} but this collection has {len(job.spans)} windows; "
                                 "it belongs to another run: delete collection/windows/ or rerun without --resume")
            win = _load_window(path, job, j)
            del win
        return k, sorted(files)

    views = world.agree(look, "the collection's resume state")
    k = views[0][0] or 0
    holder: dict[int, Any] = {}
    for rank, (_, done) in enumerate(views):
        for j in done:
            if j >= k:
                holder.setdefault(j, rank)
    if world.size == 1:
        files = window_files(folder) if folder is not None else {}
        holder = {j: files[j] for j in holder}
    if resume and ckpt is not None and not k and not holder and world.is_main:
        log.warning("--resume: no collection checkpoint at %s nor window files; starting a fresh collection", ckpt)
    if resume and (k or holder) and world.is_main:
        log.info("resuming collection: %d windows in the checkpoint, %d in window files, %d of %d to collect", k,
                 len(holder), len(job.spans) - k - len(holder), len(job.spans))
    return box["total"], k, holder


def _check_fingerprint(old: Mapping[str, Any], new: Mapping[str, Any], path: Path) -> None:
    if fingerprint(dict(old)) != fingerprint(dict(new)):
        raise ValueError(f"cannot resume from {str(path)!r}: it was made with other settings "
                         f"({mismatch(old, new)}); rerun without --resume to start over or pick another --out")


def _load_window(source: Path | bytes, job: Job, j: int) -> Collection:
    """Window ``j`` from its file (or the file's bytes), checked against the run."""
    name = str(source) if isinstance(source, Path) else f"window {j}"
    win, _ = load_checkpoint(source) if isinstance(source, Path) else read_checkpoint(source, name)
    _check_fingerprint(win.fingerprint, job.fp, Path(name))
    a, b = job.spans[j]
    if (win.meta.get("window"), win.meta.get("start"), win.meta.get("end")) != (j, a, b) or win.n != b - a:
        raise CorrsteerError(f"{name!r} does not hold window {j} (samples {a} … {b - 1}); delete it and resume")
    return win


def _collect_shared(job: Job, total: Collection, holder: dict[int, Any], k: int, mine: list[int],
                    folder: Path | None, world: distributed.World, bar: Any,
                    on_checkpoint: Callable[[int], None] | None) -> Collection:
    """Several ranks: collect this rank's windows, then rank 0 merges every window in order and shares the total."""
    send: dict[int, bytes] = {}
    for j in mine:
        blob = checkpoint_bytes(job.window(j, bar), job.spans[j][1] - job.spans[j][0])
        if folder is not None:
            window_path(folder, j).parent.mkdir(exist_ok=True)
            atomic.write_bytes(window_path(folder, j), blob)
        send[j] = blob
        if on_checkpoint is not None:
            on_checkpoint(job.spans[j][1])
    if folder is not None:
        files = window_files(folder)
        send.update({j: files[j].read_bytes() for j, rank in holder.items() if rank == world.rank})
    got = world.gather(send, "the end of collection (gathering the windows)")
    blob = None
    if world.is_main:
        every = {j: b for part in got for j, b in part.items()}
        missing = [j for j in range(k, len(job.spans)) if j not in every]
        if missing:
            raise CorrsteerError(f"windows {missing} were collected by no rank; rerun with --resume")
        for j in range(k, len(job.spans)):
            fold(total, _load_window(every.pop(j), job, j))
        total.complete = True
        blob = checkpoint_bytes(total, total.n)
        if folder is not None:
            atomic.write_bytes(folder / CHECKPOINT_FILE, blob)
    blob = world.broadcast(blob, "the end of collection (sharing the merged accumulators)")
    if not world.is_main:
        total, _ = read_checkpoint(blob, "the merged collection from rank 0")
    return total


