"""Collection: one batched greedy generation pass -> per-layer correlation accumulators.

For N training samples, generate greedily in left-padded batches with the SAEs of
every requested layer capturing at once (METHOD.md §2-§3: pooled over the
generation positions, each sequence stopping at EOS or a task stop string), score
each completion with the task's reward, and fold ``(z, y)`` into one
``CorrelationAccumulator`` per layer (METHOD.md §4).

Checkpoint and resume: every ``checkpoint_every`` samples the accumulators
(``to_bytes``) and the progress (sample offset, records so far, the run's
fingerprint) are written to ``<out_dir>/collection/checkpoint.npz`` in one atomic
replace. Batches never straddle a checkpoint boundary, so a resumed run replays
exactly the batches of an uninterrupted one and ends with byte-identical
accumulators. A resume whose fingerprint (task, model, SAEs, sample ids, pool,
positions, batch size, ...) differs from the checkpoint's is refused.

Example:
    >>> col = collect(model, tok, task, saes, task.samples("train", 256), out_dir="runs/x")  # doctest: +SKIP
    >>> col.accumulators[6].top(1)                                                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from corrsteer.config import POOLS, POSITIONS, check_choice, fingerprint
from corrsteer.core import CorrelationAccumulator
from corrsteer.errors import CorrsteerError
from corrsteer.hooks import capture
from corrsteer.method.control_state import ControlState, identity_sae, residual_means
from corrsteer.method.generation import generate
from corrsteer.models import d_model, model_id
from corrsteer.sae import as_saes
from corrsteer.storage import atomic
from corrsteer.storage.jsonable import to_jsonable

log = logging.getLogger(__name__)

COLLECTION_DIR = "collection"
CHECKPOINT_FILE = "checkpoint.npz"
RECORDS_FILE = "records.jsonl"


@dataclass
class Collection:
    """What a collection pass produced."""

    accumulators: dict[int, Any]  # layer -> CorrelationAccumulator
    records: list[dict[str, Any]]  # per training sample: id, category, completion, extracted, reward
    fingerprint: dict[str, Any]  # what the accumulators depend on (compared on resume)
    complete: bool = True  # every sample folded in
    seconds: float = 0.0  # wall time of this process's share of the pass
    meta: dict[str, Any] = field(default_factory=dict)  # pool, positions, layers, n
    controls: ControlState | None = None  # extra state for controls/baselines (collect(controls=True))

    @property
    def n(self) -> int:
        """Samples folded in so far."""
        return len(self.records)

    @property
    def score(self) -> float:
        """Mean reward over the collected samples (nan when none)."""
        return float(np.mean([r["reward"] for r in self.records])) if self.records else float("nan")


def sae_digest(sae: Any) -> str:
    """Short hash of an SAE's weights, to recognise the same SAE across runs."""
    h = hashlib.blake2b(digest_size=8)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        value = getattr(sae, name, None)
        if value is not None:
            h.update(np.ascontiguousarray(value).tobytes())
    h.update(f"{getattr(sae, 'architecture', '')}:{getattr(sae, 'k', '')}".encode())
    return h.hexdigest()


def run_fingerprint(model: Any, task: Any, saes: Mapping[int, Any], samples: Sequence[Any], pool: str,
                    positions: str, batch_size: int, max_new_tokens: int, checkpoint_every: int) -> dict[str, Any]:
    """Everything a collection's result depends on, as a JSON-ready dict."""
    ids = hashlib.sha256("\n".join(s.id for s in samples).encode()).hexdigest()[:16]
    return {"task": task.name, "model": model_id(model), "saes": {str(l): sae_digest(saes[l]) for l in sorted(saes)},
            "n": len(samples), "sample_ids": ids, "pool": pool, "positions": positions, "batch_size": batch_size,
            "max_new_tokens": max_new_tokens, "stop_strings": list(task.stop_strings),
            "checkpoint_every": checkpoint_every}


def save_checkpoint(path: Path, col: Collection, offset: int) -> None:
    """Write accumulators + progress to ``path`` in one atomic replace (temp file + rename)."""
    progress = {"offset": offset, "complete": col.complete, "fingerprint": col.fingerprint,
                "hash": fingerprint(col.fingerprint), "records": col.records, "meta": col.meta}
    arrays = {"progress": np.frombuffer(json.dumps(progress).encode(), dtype=np.uint8)}
    for layer, acc in col.accumulators.items():
        arrays[f"layer_{layer}"] = np.frombuffer(acc.to_bytes(), dtype=np.uint8)
    if col.controls is not None:
        arrays.update(col.controls.to_arrays())
    with atomic.atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files (``.<name>.<8 hex>.tmp``) that writes of ``path`` killed mid-way left behind.

    :mod:`corrsteer.storage.atomic` writes a checkpoint to such a temp file and renames it onto
    ``path``; a SIGKILL or power cut between the two leaves the temp file, which nothing reads. A
    collection removes them when it starts; it is the only writer of its checkpoint (a second
    process collecting into the same folder at the same time is not supported).

    Returns:
        The files removed.
    """
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if re.fullmatch(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp", tmp.name) and tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    if removed:
        log.warning("removed %d temp file(s) of an interrupted checkpoint write: %s", len(removed),
                    ", ".join(str(t) for t in removed))
    return removed


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Collection, int]:
    """Read a checkpoint written by ``save_checkpoint``.

    Returns:
        ``(collection, offset)``: the accumulators and records so far, and the next sample offset.

    Raises:
        CorrsteerError: the file is unreadable or corrupt (the message names it).
    """
    path = Path(path)
    try:
        blob = path.read_bytes()  # np.load on a path leaks the handle when the zip is corrupt
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            progress = json.loads(data["progress"].tobytes().decode())
            accs = {int(k[6:]): CorrelationAccumulator.from_bytes(data[k].tobytes())
                    for k in data.files if k.startswith("layer_")}
            controls = ControlState.from_arrays({k: data[k] for k in data.files if k.startswith("control_")})
        col = Collection(accumulators=accs, records=progress["records"], fingerprint=progress["fingerprint"],
                         complete=bool(progress["complete"]), meta=progress.get("meta", {}), controls=controls)
        offset = int(progress["offset"])
    except Exception as exc:  # noqa: BLE001 - corrupt bytes reach zipfile, zlib, json and the core in many ways
        # (fuzzing found NotImplementedError for an unknown zip compression method, besides the usual ones)
        raise CorrsteerError(f"collection checkpoint {str(path)!r} is unreadable or corrupt ({exc}); "
                             "delete it and collect again without --resume") from exc
    if offset != len(col.records):
        raise CorrsteerError(f"collection checkpoint {str(path)!r} is inconsistent (offset {offset}, "
                             f"{len(col.records)} records); delete it and collect again")
    return col, offset


def load_collection(out_dir: str | os.PathLike[str]) -> Collection:
    """The finished collection of a run folder (``<out_dir>/collection/checkpoint.npz``).

    Raises:
        ValueError: no checkpoint there, or the collection did not finish (resume it first).
    """
    path = Path(out_dir) / COLLECTION_DIR / CHECKPOINT_FILE
    if not path.is_file():
        raise ValueError(f"no collection in {str(out_dir)!r} (missing {str(path)!r}); run `corrsteer collect` first")
    col, offset = load_checkpoint(path)
    if not col.complete:
        raise ValueError(f"the collection in {str(out_dir)!r} stopped at sample {offset} of "
                         f"{col.fingerprint.get('n')}; finish it with `corrsteer collect --resume`")
    return col


def _mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}" for k in keys)


def collect(model: Any, tokenizer: Any, task: Any, saes: Mapping[int, Any], samples: Sequence[Any], *,
            pool: str | None = None, positions: str = "generation", batch_size: int = 16,
            max_new_tokens: int | None = None, out_dir: str | os.PathLike[str] | None = None,
            checkpoint_every: int = 256, resume: bool = False, progress: bool = True,
            on_checkpoint: Callable[[int], None] | None = None, controls: bool = False,
            control_seed: int = 0, control_draws: int = 1) -> Collection:
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
        checkpoint_every: samples between checkpoints; batches end at these boundaries.
        resume: continue from ``<out_dir>/collection/checkpoint.npz`` if present.
        progress: show a tqdm bar with the running score.
        on_checkpoint: called with the sample offset after each checkpoint is written.
        controls: also fill ``Collection.controls`` (shuffled-reward, per-class and
            residual-mean accumulators, ``corrsteer.studies.controls``) in the same pass.
        control_seed: seed of the shuffled-reward permutations.
        control_draws: how many shuffled-reward permutations to keep (one control each).

    Returns:
        ``Collection`` with accumulators ``{layer: (d_sae,) state}`` and per-sample records.

    Raises:
        ValueError: bad option, no samples, or a resume whose fingerprint differs.
    """
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
    max_new_tokens = task.max_new_tokens if max_new_tokens is None else max_new_tokens
    layers = sorted(saes)
    fp = run_fingerprint(model, task, saes, samples, pool, positions, batch_size, max_new_tokens, checkpoint_every)
    meta = {"pool": pool, "positions": positions, "layers": layers, "n": len(samples), "task": task.name}
    state = None
    if controls:
        fp["controls"] = {"seed": int(control_seed)}  # only then: older checkpoints keep their fingerprint
        if control_draws != 1:
            fp["controls"]["draws"] = int(control_draws)
        state = ControlState({l: int(saes[l].d_sae) for l in layers}, d_model(model), control_seed, control_draws)
    col = Collection({l: CorrelationAccumulator(int(saes[l].d_sae)) for l in layers}, [], fp, complete=False,
                     meta=meta, controls=state)
    offset = 0
    ckpt = Path(out_dir) / COLLECTION_DIR / CHECKPOINT_FILE if out_dir is not None else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        for target in (ckpt, ckpt.parent / RECORDS_FILE):
            remove_stale_temps(target)
        if resume and not ckpt.is_file():
            log.warning("--resume: no collection checkpoint at %s; starting a fresh collection", ckpt)
        if ckpt.is_file() and resume:
            old, offset = load_checkpoint(ckpt)
            if fingerprint(old.fingerprint) != fingerprint(fp):
                raise ValueError(f"cannot resume from {str(ckpt)!r}: it was made with other settings "
                                 f"({_mismatch(old.fingerprint, fp)}); rerun without --resume to start over "
                                 "or pick another --out")
            col = old
            col.meta = meta
            log.info("resuming collection at sample %d of %d from %s", offset, len(samples), ckpt)
        elif ckpt.is_file():
            log.warning("overwriting the collection checkpoint %s (pass resume=True / --resume to continue it)", ckpt)
    start = time.perf_counter()
    bar = tqdm(total=len(samples), initial=offset, disable=not progress, desc=f"collect {task.name}",
               unit="sample", dynamic_ncols=True)
    try:
        while offset < len(samples):
            boundary = min(len(samples), (offset // checkpoint_every + 1) * checkpoint_every)
            while offset < boundary:
                batch = samples[offset:min(offset + batch_size, boundary)]
                _collect_batch(model, tokenizer, task, saes, batch, col, pool, positions, max_new_tokens)
                offset += len(batch)
                bar.update(len(batch))
                bar.set_postfix(score=f"{col.score:.3f}")
            if col.controls is not None:
                col.controls.flush()  # the shuffled control's window ends with the checkpoint window
            col.complete = offset == len(samples)
            if ckpt is not None:
                save_checkpoint(ckpt, col, offset)
                log.debug("checkpoint at sample %d written to %s", offset, ckpt)
            if on_checkpoint is not None:
                on_checkpoint(offset)
    finally:
        bar.close()
    col.complete = True
    col.seconds = time.perf_counter() - start
    if ckpt is not None:
        _write_records(ckpt.parent / RECORDS_FILE, col.records)
    log.info("collected %d samples at layers %s: score %.4f (%d positive) in %.1f s", col.n, layers, col.score,
             sum(r["reward"] for r in col.records), col.seconds)
    return col


def _collect_batch(model: Any, tokenizer: Any, task: Any, saes: Mapping[int, Any], batch: Sequence[Any],
                   col: Collection, pool: str, positions: str, max_new_tokens: int) -> None:
    prompts = [task.prompt(s, tokenizer) for s in batch]
    if col.controls is not None:
        gens, pooled, resid = _generate_with_residuals(model, tokenizer, task, saes, prompts, pool, positions,
                                                       max_new_tokens)
    else:
        with torch.inference_mode(), capture(model, saes, pool=pool, positions=positions) as cap:
            gens = generate(model, tokenizer, prompts, max_new_tokens, stop_strings=task.stop_strings,
                            batch_size=len(prompts), capture=cap)
        pooled = cap.result()  # {layer: (n_seq, d_sae) float32}, rows in prompt order
    if len(gens) != len(batch):
        raise CorrsteerError(f"generate returned {len(gens)} generations for {len(batch)} prompts")
    rewards = np.array([task.reward(s, g.completion) for s, g in zip(batch, gens)], dtype=np.float64)  # (n_seq,)
    for layer, acc in col.accumulators.items():
        z = pooled[layer]
        if z.shape != (len(batch), acc.d_sae):
            raise CorrsteerError(f"capture gave layer {layer} pooled activations of shape {tuple(z.shape)}, "
                                 f"expected ({len(batch)}, {acc.d_sae})")
        acc.update(z, rewards)
    if col.controls is not None:
        col.controls.update(pooled, resid, rewards)
    for s, g, y in zip(batch, gens, rewards):
        col.records.append({"id": s.id, "category": s.category, "completion": g.completion,
                            "extracted": to_jsonable(task.extract(s, g.completion), fallback=str), "reward": int(y)})


def _generate_with_residuals(model: Any, tokenizer: Any, task: Any, saes: Mapping[int, Any], prompts: list[str],
                             pool: str, positions: str, max_new_tokens: int) -> tuple[list[Any], dict, dict]:
    """One generation pass that captures the SAEs and, alongside, the mean residual per sample and layer.

    Returns:
        ``(generations, {layer: (n_seq, d_sae)}, {layer: (n_seq, d_model)})``, rows in prompt order.
    """
    width = d_model(model)
    ident = {l: identity_sae(width, l, str(getattr(saes[l], "site", None) or "resid_post")) for l in saes}
    order: list[int] = []
    with torch.inference_mode(), capture(model, saes, pool=pool, positions=positions) as cap, \
            capture(model, ident, pool="mean", positions=positions) as raw:
        start = raw.mark()
        gens = generate(model, tokenizer, prompts, max_new_tokens, stop_strings=task.stop_strings,
                        batch_size=len(prompts), capture=cap, on_batch=lambda idx, _: order.extend(idx))
        if sorted(order) != list(range(len(prompts))):
            raise CorrsteerError(f"generate reported prompt indices {order} for {len(prompts)} prompts")
        raw.mark()
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[np.asarray(order)] = np.arange(len(order))
        raw.merge_results(start, inverse)  # batches came length-sorted: back to prompt order
    pooled = cap.result()  # {layer: (n_seq, d_sae) float32}
    resid = {l: residual_means(z) for l, z in raw.result().items()}  # {layer: (n_seq, d_model)}
    return gens, pooled, resid


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic.atomic_open(path, "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
