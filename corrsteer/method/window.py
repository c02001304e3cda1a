"""One window of a collection: its batches generated, scored and folded into fresh accumulators.

A collection (:func:`corrsteer.method.collection.collect`) is cut into windows of
``checkpoint_every`` samples; a window's batches of ``batch_size`` start at the window's
first sample and never cross its end. :meth:`Job.window` collects window ``j`` into a
fresh :class:`~corrsteer.method.checkpoints.Collection` (and fresh controls' state whose
shuffled window is this window), so that the window's bytes depend on its samples and
the settings alone, whichever process collects it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from corrsteer.core import CorrelationAccumulator
from corrsteer.errors import CorrsteerError
from corrsteer.hooks import capture
from corrsteer.method.checkpoints import Collection
from corrsteer.method.control_state import ControlState, identity_sae, residual_means
from corrsteer.method.generation import generate
from corrsteer.models import d_model
from corrsteer.storage.jsonable import to_jsonable

__all__ = ["Job", "windows"]


def windows(n: int, every: int) -> list[tuple[int, int]]:
    """The windows ``[(start, end)]`` of ``n`` samples cut every ``every`` samples."""
    return [(a, min(a + every, n)) for a in range(0, n, every)]


class Job:
    """What every window of one collection shares, and how one window is collected."""

    def __init__(self, model: Any, tokenizer: Any, task: Any, saes: Mapping[int, Any], samples: Sequence[Any],
                 pool: str, positions: str, batch_size: int, max_new_tokens: int, fp: dict[str, Any],
                 meta: dict[str, Any], control_seed: int | None, spans: list[tuple[int, int]],
                 control_draws: int = 1) -> None:
        self.model, self.tokenizer, self.task, self.saes, self.samples = model, tokenizer, task, saes, samples
        self.pool, self.positions, self.batch_size, self.max_new_tokens = pool, positions, batch_size, max_new_tokens
        self.fp, self.meta, self.control_seed, self.spans = fp, meta, control_seed, spans
        self.control_draws = control_draws

    def empty(self, offset: int = 0) -> Collection:
        """Fresh accumulators (and controls' state starting at sample ``offset``)."""
        state = None
        if self.control_seed is not None:
            state = ControlState({l: int(self.saes[l].d_sae) for l in self.saes}, d_model(self.model),
                                 self.control_seed, self.control_draws)
            state.offset = offset
        return Collection({l: CorrelationAccumulator(int(self.saes[l].d_sae)) for l in sorted(self.saes)}, [],
                          self.fp, complete=False, meta=dict(self.meta), controls=state)

    def window(self, j: int, bar: Any) -> Collection:
        """Collect window ``j`` into fresh accumulators."""
        a, b = self.spans[j]
        win = self.empty(a)
        win.meta.update(window=j, start=a, end=b)
        for s in range(a, b, self.batch_size):
            batch = self.samples[s:min(s + self.batch_size, b)]
            _collect_batch(self.model, self.tokenizer, self.task, self.saes, batch, win, self.pool, self.positions,
                           self.max_new_tokens)
            bar.update(len(batch))
            bar.set_postfix(score=f"{win.score:.3f}")
        if win.controls is not None:
            win.controls.flush()  # the shuffled control's window is this window
        return win


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
