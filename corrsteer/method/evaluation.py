"""Evaluation: greedy completions and rewards with and without steering, on the same samples (METHOD.md §6).

:func:`generate_records` scores one condition (unsteered, or steered by interventions) in
batched greedy passes; :func:`make_validator` turns it into the ``validate`` callable that
``global`` and ``pruned`` selection need; :func:`evaluate` runs both conditions on the test
split and compares them with :func:`corrsteer.method.statistics.compare` (paired
bootstrap, exact McNemar, SER).

Example:
    >>> ev = evaluate(model, tok, task, selection, task.samples("test", 200))   # doctest: +SKIP
    >>> ev.comparison["delta"], ev.comparison["mcnemar_p"]                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from corrsteer.config import POSITIONS, check_choice
from corrsteer.hooks import steer
from corrsteer.method.generation import generate
from corrsteer.method.statistics import compare, format_p

log = logging.getLogger(__name__)

__all__ = ["Evaluation", "evaluate", "generate_records", "make_validator", "task_metrics"]


def generate_records(model: Any, tokenizer: Any, task: Any, samples: Sequence[Any], interventions: Any = None, *,
                     positions: str = "generation", batch_size: int = 16, max_new_tokens: int | None = None,
                     progress: bool = True, desc: str = "generate",
                     condition: str | None = None) -> list[dict[str, Any]]:
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

    Returns:
        One record per sample: ``id, category, prompt, completion, extracted, reward`` + the sample's meta.
    """
    max_new = task.max_new_tokens if max_new_tokens is None else max_new_tokens
    steering = steer(model, interventions, positions=positions) if interventions else contextlib.nullcontext()
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(samples), disable=not progress, desc=desc, unit="sample", dynamic_ncols=True)
    try:
        with torch.inference_mode(), steering:
            for start in range(0, len(samples), batch_size):
                batch = samples[start:start + batch_size]
                prompts = [task.prompt(s, tokenizer) for s in batch]
                gens = generate(model, tokenizer, prompts, max_new, stop_strings=task.stop_strings,
                                batch_size=len(prompts))
                for s, p, g in zip(batch, prompts, gens):
                    rec = dict(s.meta)
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


def make_validator(model: Any, tokenizer: Any, task: Any, samples: Sequence[Any], *, batch_size: int = 16,
                   max_new_tokens: int | None = None, progress: bool = True) -> Callable[[Any], float]:
    """``validate(interventions) -> mean reward`` on ``samples``: one batched pass per call."""
    calls = {"n": 0}

    def validate(interventions: Any) -> float:
        calls["n"] += 1
        label = "validate unsteered" if not interventions else f"validate candidate {calls['n'] - 1}"
        recs = generate_records(model, tokenizer, task, samples, interventions, batch_size=batch_size,
                                max_new_tokens=max_new_tokens, progress=progress, desc=label)
        return float(np.mean([r["reward"] for r in recs]))

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
             baseline: list[dict[str, Any]] | None = None, label: str = "steered") -> Evaluation:
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

    Returns:
        :class:`Evaluation`.
    """
    check_choice("positions", positions, POSITIONS)
    if not samples:
        raise ValueError("samples is empty: the evaluation needs at least one test sample (n_test)")
    gen = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress)
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
