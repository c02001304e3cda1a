"""Evaluation: greedy completions and rewards with and without steering, on the same samples (METHOD.md §6).

:func:`generate_records` scores one condition (unsteered, or steered by interventions) in
batched greedy passes, and :func:`generate_conditions` several at once, every batch of
samples carrying every condition (per-row steering); :func:`make_validator` turns them
into the ``validate`` callable that ``global`` and ``pruned`` selection need; :func:`evaluate`
runs both conditions on the test split and compares them with
:func:`corrsteer.method.statistics.compare` (paired bootstrap, exact McNemar, SER).
Under several ranks (:mod:`corrsteer.method.distributed`) the batches are dealt out and
every rank gets every record, in sample order.

Example:
    >>> ev = evaluate(model, tok, task, selection, task.samples("test", 200))   # doctest: +SKIP
    >>> ev.comparison["delta"], ev.comparison["mcnemar_p"]                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from corrsteer.config import POSITIONS, check_choice
from corrsteer.hooks import steer
from corrsteer.method import distributed
from corrsteer.method.generation import generate
from corrsteer.method.statistics import compare, format_p

log = logging.getLogger(__name__)

__all__ = ["Evaluation", "evaluate", "generate_conditions", "generate_records", "make_validator", "task_metrics"]


def generate_records(model: Any, tokenizer: Any, task: Any, samples: Sequence[Any], interventions: Any = None, *,
                     positions: str = "generation", batch_size: int = 16, max_new_tokens: int | None = None,
                     progress: bool = True, desc: str = "generate", condition: str | None = None,
                     world: distributed.World | None = None) -> list[dict[str, Any]]:
    """Greedy completions and rewards for ``samples``, optionally steered.

    Args:
        model, tokenizer, task: the causal LM, its tokenizer and the task (prompt, stop strings, reward).
        samples: the samples, in order.
        interventions: what :func:`corrsteer.hooks.steer` takes (``selection.interventions()``);
            None or [] = unsteered.
        positions: where the interventions act: ``"generation"`` or ``"all"``.
        batch_size: sequences per batched generation pass.
        max_new_tokens: None = the task's.
        progress: show a tqdm bar with the running score.
        desc: the bar's label.
        condition: stored in each record ("baseline" | "steered") when given.
        world: the ranks sharing the batches (None: ``distributed.current()``); every rank
            gets every record.

    Returns:
        One record per sample: ``id, category, prompt, completion, extracted, reward`` + the sample's meta.
    """
    return generate_conditions(model, tokenizer, task, samples, [interventions], positions=positions,
                               batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress, desc=desc,
                               conditions=None if condition is None else [condition], world=world)[0]


def generate_conditions(model: Any, tokenizer: Any, task: Any, samples: Sequence[Any], sets: Sequence[Any], *,
                        positions: str = "generation", batch_size: int = 16, max_new_tokens: int | None = None,
                        progress: bool = True, desc: str = "generate", conditions: Sequence[str] | None = None,
                        world: distributed.World | None = None) -> list[list[dict[str, Any]]]:
    """:func:`generate_records` for several intervention sets at once, in one batched pass.

    The samples are cut into batches of ``batch_size`` in order, as one condition alone
    would be; each batch then runs once with a row per sample and set (``steer(...,
    rows=...)``), so that every row sees the padding it would see alone. Under several
    ranks the batches are dealt out (:meth:`World.share`) and the records gathered back
    in sample order.

    Args:
        sets: one entry per condition: interventions, or None/[] for unsteered.
        conditions: the ``condition`` label of each set's records (None: no label).
        (the rest as :func:`generate_records`)

    Returns:
        ``[records of set 0, records of set 1, ...]``, each in the order of ``samples``.
    """
    world = distributed.current() if world is None else world
    check_choice("positions", positions, POSITIONS)
    sets = list(sets)
    if not sets:
        raise ValueError("sets is empty: give at least one intervention set (None for unsteered)")
    if conditions is not None and len(conditions) != len(sets):
        raise ValueError(f"{len(conditions)} condition labels for {len(sets)} intervention sets")
    if world.size > max(len(samples), 1):
        raise ValueError(f"{world.size} ranks share {len(samples)} samples ({desc}): launch at most "
                         f"{len(samples)} processes")
    max_new = task.max_new_tokens if max_new_tokens is None else max_new_tokens
    world.check_same({"task": task.name, "samples": [s.id for s in samples], "sets": _digest(sets),
                      "positions": positions, "batch_size": batch_size, "max_new_tokens": max_new},
                     f"what to generate ({desc})")
    starts = list(range(0, len(samples), batch_size))
    mine = [starts[i] for i in world.share(len(starts))]
    one = len(sets) == 1
    steering = (steer(model, sets[0], positions=positions) if sets[0] else contextlib.nullcontext()) if one else \
        steer(model, [s or {} for s in sets], positions=positions, rows=[])
    records: list[list[dict[str, Any]]] = [[] for _ in sets]
    bar = tqdm(total=sum(min(batch_size, len(samples) - a) for a in mine) * len(sets),
               disable=not (progress and world.is_main), desc=desc, unit="sample", dynamic_ncols=True)
    try:
        with torch.inference_mode(), steering as st:
            for start in mine:
                batch = samples[start:start + batch_size]
                prompts = [task.prompt(s, tokenizer) for s in batch]
                rows = [k for k in range(len(sets)) for _ in batch]  # set of each stacked prompt
                gens = generate(model, tokenizer, prompts * len(sets), max_new, stop_strings=task.stop_strings,
                                batch_size=len(prompts) * len(sets),
                                on_batch_start=None if one else lambda idx: st.assign([rows[i] for i in idx]))
                for k in range(len(sets)):
                    for s, p, g in zip(batch, prompts, gens[k * len(batch):(k + 1) * len(batch)]):
                        rec = dict(s.meta)
                        rec.update(id=s.id, category=s.category, prompt=p, completion=g.completion,
                                   extracted=task.extract(s, g.completion), reward=task.reward(s, g.completion))
                        if conditions is not None:
                            rec["condition"] = conditions[k]
                        records[k].append(rec)
                bar.update(len(batch) * len(sets))
                bar.set_postfix(score=f"{np.mean([r['reward'] for r in records[-1]]):.3f}")
    finally:
        bar.close()
    if world.size > 1:
        parts = world.all_gather(records, f"the end of {desc}")
        records = [[r for part in parts for r in part[k]] for k in range(len(sets))]
    return records


def _digest(sets: Sequence[Any]) -> list[str]:
    """A short hash of each intervention set (layers, sites, vector bytes), to compare ranks."""
    out = []
    for interventions in sets:
        h = hashlib.blake2b(digest_size=8)
        items = interventions.items() if isinstance(interventions, Mapping) else (interventions or [])
        for item in items:
            layer, vector = item[0], item[1]
            h.update(f"{layer}:{item[2] if len(item) > 2 else 'resid_post'}:".encode())
            h.update(np.ascontiguousarray(vector.detach().cpu().numpy() if torch.is_tensor(vector)
                                          else vector).tobytes())
        out.append(h.hexdigest())
    return out


def make_validator(model: Any, tokenizer: Any, task: Any, samples: Sequence[Any], *, batch_size: int = 16,
                   max_new_tokens: int | None = None, progress: bool = True, batched: bool = True,
                   world: distributed.World | None = None) -> Callable[[Any], float]:
    """``validate(interventions) -> mean reward`` on ``samples``.

    ``validate.many([set_0, set_1, ...]) -> [score_0, ...]`` scores several sets: with
    ``batched`` (the default) in one batched pass (:func:`generate_conditions`: each batch
    of samples carries every set), else one pass per set. Both give the same scores
    under greedy decoding where the model's kernels do not depend on the batch size
    (docs/scale_out.md). Selection calls ``many`` when it is there.
    """
    calls = {"n": 0}
    gen = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress, world=world)

    def mean(records: list[dict[str, Any]]) -> float:
        return float(np.mean([r["reward"] for r in records]))

    def validate(interventions: Any) -> float:
        calls["n"] += 1
        label = "validate unsteered" if not interventions else f"validate candidate {calls['n'] - 1}"
        return mean(generate_records(model, tokenizer, task, samples, interventions, desc=label, **gen))

    def many(sets: Sequence[Any]) -> list[float]:
        if not batched:
            return [validate(s) for s in sets]
        calls["n"] += len(sets)
        recs = generate_conditions(model, tokenizer, task, samples, sets, desc=f"validate {len(sets)} conditions",
                                   **gen)
        return [mean(r) for r in recs]

    validate.many = many  # type: ignore[attr-defined]
    return validate


def task_metrics(task: Any, base: list[dict[str, Any]], steered: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"baseline": task.metrics(...), "steered": ...}``, or ``{}`` when the task has no extra metrics."""
    b, s = task.metrics(base), task.metrics(steered)
    return {"baseline": b, "steered": s} if (b or s) else {}


@dataclass
class Evaluation:
    """Both conditions of an evaluation on the same samples, and their comparison."""

    baseline: list[dict[str, Any]]  # unsteered records (condition "baseline")
    steered: list[dict[str, Any]]  # steered records (condition "steered"), same samples, same order
    comparison: dict[str, Any]  # compare(): scores, delta, ci95, mcnemar_p, ser, pos, neg, per_category
    metrics: dict[str, Any]  # the task's extra metrics per condition (BBQ bias scores), or {}

    def __str__(self) -> str:
        c = self.comparison
        lo, hi = c["ci95"]
        return (f"unsteered {100 * c['baseline']['score']:.1f}% -> steered {100 * c['steered']['score']:.1f}% "
                f"(n={c['baseline']['n']}): {100 * c['delta']:+.1f} pp, 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}], "
                f"McNemar p={format_p(c['mcnemar_p'])}, {c['pos']} up / {c['neg']} down")


def evaluate(model: Any, tokenizer: Any, task: Any, selection: Any, samples: Sequence[Any], *,
             scale: float | None = None, positions: str = "generation", batch_size: int = 16,
             max_new_tokens: int | None = None, n_boot: int = 10000, seed: int = 0, progress: bool = True,
             baseline: list[dict[str, Any]] | None = None, label: str = "steered",
             world: distributed.World | None = None) -> Evaluation:
    """Unsteered vs steered on ``samples`` (METHOD.md §6).

    Args:
        model, tokenizer, task: the causal LM, its tokenizer and the task.
        selection: a :class:`corrsteer.Selection` (anything with ``interventions(scale)``).
        samples: the test samples.
        scale: the factor on the selection's coefficients; None = its own ``scale``.
        positions: ``"generation"`` (METHOD.md §2) or ``"all"`` (prompt positions too).
        batch_size, max_new_tokens: generation options.
        n_boot, seed: bootstrap resamples and seed of the interval.
        progress: tqdm bars.
        baseline: unsteered records of the same samples when already generated (several
            conditions share one baseline).
        label: the steered condition's name on its progress bar.
        world: the ranks sharing the batches (None: ``distributed.current()``).

    Returns:
        :class:`Evaluation`.
    """
    check_choice("positions", positions, POSITIONS)
    if not samples:
        raise ValueError("samples is empty: the evaluation needs at least one test sample (n_test)")
    gen = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress, world=world)
    if baseline is None:
        baseline = generate_records(model, tokenizer, task, samples, None, desc="test unsteered",
                                    condition="baseline", **gen)
    elif [r["id"] for r in baseline] != [s.id for s in samples]:
        raise ValueError("baseline records are not of the given samples (ids differ); generate them again")
    interventions = selection.interventions(scale)
    if interventions:
        steered = generate_records(model, tokenizer, task, samples, interventions, positions=positions,
                                   desc=f"test {label}", condition="steered", **gen)
    else:
        log.warning("the selection steers nothing (%s); the steered condition equals the baseline",
                    getattr(selection, "note", ""))
        steered = [dict(r, condition="steered") for r in baseline]
    comparison = compare([r["reward"] for r in baseline], [r["reward"] for r in steered],
                         [r["category"] for r in baseline], n_boot=n_boot, seed=seed)
    return Evaluation(baseline, steered, comparison, task_metrics(task, baseline, steered))
