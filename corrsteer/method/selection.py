"""Feature selection from correlations: single / global / all / pruned (METHOD.md §5).

Per layer l the candidates are the top positive features (``r > 0``, largest r first)
and the top negative features (``r < 0``, smallest r first), ranked by the C core
(``CorrelationAccumulator.top``, ties to the lower index); with ``top_k = 1`` these are
``i⁺_l = argmax r`` and ``i⁻_l = argmin r`` (METHOD.md §5). A candidate with
``top_k = k > 1`` is the k best features of one sign in one layer, steered together.

What a selection steers, and how it steers, is :mod:`corrsteer.method.features`.

| mode     | steered                                                                 |
|----------|-------------------------------------------------------------------------|
| single   | the positive candidate with the largest r over all layers               |
| global   | every layer's positive and negative candidate validated alone; the best |
| all      | every layer's positive candidate, together                              |
| pruned   | per layer the better of its two candidates, kept iff its validation     |
|          | score is strictly above the unsteered validation score; kept together   |

Deterministic ties: ``single`` takes the lower layer among equal r; ``global`` and
``pruned`` prefer the positive candidate over the negative one at equal validation
score, and ``global`` then the lower layer. ``validate`` is called once with no
intervention (the baseline, only for global/pruned) and once per candidate, or, when it
has a ``many`` method, ``validate.many([baseline, candidate, ...])`` once (one batched pass).

Example:
    >>> sel = select(accumulators, saes, "all")                   # doctest: +SKIP
    >>> with sel.apply(model):                                    # doctest: +SKIP
    ...     out = model.generate(**batch, max_new_tokens=32)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from corrsteer.config import MODES, NEGATIVE_COEFFICIENTS, check_choice
from corrsteer.method.features import Candidate, Feature, Selection, Validator, feature_from_top
from corrsteer.sae import as_saes

log = logging.getLogger(__name__)

__all__ = ["mean_neg", "select", "top_features", "usable"]


def mean_neg(acc: Any) -> np.ndarray:
    """(d_sae,) mean pooled activation over the unrewarded samples: ``(n·mean − n_pos·mean_pos) / (n − n_pos)``."""
    m = acc.moments()
    n, n_pos = m["n"], m["n_pos"]
    if n_pos >= n:
        return np.zeros(acc.d_sae)
    return (n * m["mean"] - n_pos * m["mean_pos"]) / (n - n_pos)


def top_features(acc: Any, sign: int, k: int, layer: int,
                 negative_coefficient: str = "mean_pos") -> tuple[Feature, ...]:
    """The k features of one sign with the largest |r| (ties: lower index), ranked by the C core.

    Args:
        acc: a ``CorrelationAccumulator``.
        sign: +1 for r > 0 (largest first), -1 for r < 0 (smallest first).
        k: how many at most (clipped to d_sae).
        layer: the layer recorded in each ``Feature``.
        negative_coefficient: ``"mean_pos"`` (the paper's ``−|c|``) or ``"mean_neg"`` for negative features.

    Returns:
        Up to k ``Feature``s; empty when no feature has that sign.
    """
    rows = acc.top(min(int(k), acc.d_sae), "positive" if sign > 0 else "negative")
    neg = mean_neg(acc) if sign < 0 and len(rows) else None
    return tuple(feature_from_top(row, layer, sign, None if neg is None else neg[int(row["index"])],
                                  negative_coefficient) for row in rows)


def _check_inputs(accumulators: Mapping[int, Any], saes: Mapping[int, Any], mode: str,
                  validate: Validator | None, top_k: int, scale: float) -> None:
    check_choice("mode", mode, MODES)
    if not accumulators:
        raise ValueError("accumulators is empty: collect at least one layer before selecting")
    if mode in ("global", "pruned") and not callable(validate):
        raise ValueError(f"mode={mode!r} needs validate=callable(interventions) -> score on the validation split")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be a positive integer")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale={scale!r} must be a finite number")
    for layer, acc in accumulators.items():
        if layer not in saes:
            raise ValueError(f"no SAE for layer {layer}; saes has layers {sorted(saes)}")
        d_sae = saes[layer].W_dec.shape[0]
        if acc.d_sae != d_sae:
            raise ValueError(f"layer {layer}: accumulator has d_sae={acc.d_sae} but the SAE has d_sae={d_sae}; "
                             "use the SAEs the accumulators were collected with")


def _score(value: Any, what: str) -> float:
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"validate returned {score} for {what}; it must return a finite score")
    return score


MIN_CLASS_SAMPLES = 10  # fewer rewarded (or unrewarded) samples than this: correlations are close to arbitrary


def _warn_if_few(acc: Any) -> None:
    """Warn when one reward class is so small that every r is driven by a handful of samples."""
    n, n_pos = int(acc.n), int(acc.n_positive)
    small = min(n_pos, n - n_pos)
    if 0 < small < MIN_CLASS_SAMPLES:
        which = "rewarded" if n_pos == small else "unrewarded"
        log.warning("only %d of the %d collection samples are %s: every correlation rests on those %d, so the "
                    "chosen features are close to arbitrary; collect more samples, or use a task where the "
                    "model's success varies", small, n, which, small)


def usable(acc: Any, layer: int) -> bool:
    """False (with a warning) when every collection reward is equal, so that every r is 0."""
    if acc.n_positive in (0, acc.n):
        log.warning("layer %d: all %d collection rewards are %d, so every correlation is 0; "
                    "no candidate from this layer", layer, int(acc.n), int(acc.n_positive > 0))
        return False
    return True


def select(accumulators: Mapping[int, Any], saes: Mapping[int, Any], mode: str,
           validate: Validator | None = None, top_k: int = 1, scale: float = 1.0,
           negative_coefficient: str = "mean_pos") -> Selection:
    """Choose the features to steer from per-layer correlations (METHOD.md §5).

    Args:
        accumulators: layer -> ``CorrelationAccumulator`` filled by collection (or a
            ``Collection``, whose ``accumulators`` are used).
        saes: layer -> SAE (its ``W_dec: (d_sae, d_in)``) for every accumulator's layer.
        mode: ``"single"``, ``"global"``, ``"all"`` or ``"pruned"``.
        validate: ``validate(interventions) -> score`` on the validation split; needed
            by ``global`` and ``pruned``; ``[]`` means unsteered.
        top_k: features per candidate (the k best of one sign in one layer).
        scale: the selection's factor on every coefficient (applied when it steers).
        negative_coefficient: ``"mean_pos"`` (METHOD.md §5: a negative feature is subtracted with
            ``−|mean over rewarded samples|``, near zero by construction) or ``"mean_neg"``
            (``−|mean over unrewarded samples|``, where the feature fires).

    Returns:
        A ``Selection``; ``features == []`` when nothing is steered (``note`` says why).

    Raises:
        ValueError: unknown mode, missing validate, SAE/accumulator mismatch.
    """
    accumulators = getattr(accumulators, "accumulators", accumulators)
    saes = as_saes(saes)  # SAELens SAEs too
    _check_inputs(accumulators, saes, mode, validate, top_k, scale)
    check_choice("negative_coefficient", negative_coefficient, NEGATIVE_COEFFICIENTS)
    layers = sorted(accumulators)
    pos: dict[int, Candidate] = {}
    neg: dict[int, Candidate] = {}
    _warn_if_few(accumulators[layers[0]])  # every layer saw the same rewards
    for layer in layers:
        acc = accumulators[layer]
        if not usable(acc, layer):
            continue
        p = top_features(acc, +1, top_k, layer)
        q = top_features(acc, -1, top_k, layer, negative_coefficient)
        if p:
            pos[layer] = Candidate(layer, +1, p)
        if q:
            neg[layer] = Candidate(layer, -1, q)

    baseline: float | None = None
    note = ""
    if mode in ("single", "all"):
        candidates = [pos[l] for l in layers if l in pos]
        chosen = list(candidates)
        if mode == "single" and candidates:  # largest r; ties: lower layer
            chosen = [max(candidates, key=lambda c: (c.features[0].r, -c.layer))]
    else:
        candidates = [c for l in layers for c in (pos.get(l), neg.get(l)) if c is not None]
        baseline = _validate_all(candidates, saes, validate, float(scale)) if candidates else None
        if mode == "global":  # best score; ties: positive, then lower layer
            chosen = [max(candidates, key=lambda c: (c.score, c.sign > 0, -c.layer))] if candidates else []
        else:
            chosen = []
            for l in layers:
                options = [c for c in (pos.get(l), neg.get(l)) if c is not None]
                if options:
                    better = max(options, key=lambda c: (c.score, c.sign > 0))  # ties: the positive one
                    if better.score > baseline:  # strictly above the unsteered score
                        chosen.append(better)
            if candidates and not chosen:
                note = (f"nothing kept: no layer's best candidate scored strictly above the unsteered "
                        f"validation score {baseline:.4f}; steering nothing")
                log.warning("pruned: %s", note)
    if not candidates:
        note = "no feature has a correlation of the needed sign in any layer; steering nothing"
        log.warning("%s: %s", mode, note)
    for c in chosen:
        c.kept = True
    return Selection.from_features([f for c in chosen for f in c.features], saes, mode, candidates=candidates,
                                   baseline_score=baseline, top_k=top_k, scale=float(scale), note=note,
                                   meta={"negative_coefficient": negative_coefficient})


def _validate_all(candidates: list[Candidate], saes: Mapping[int, Any], validate: Any, scale: float) -> float:
    """Score the unsteered baseline once, then each candidate alone at ``scale`` (sets ``c.score``).

    A validator with a ``many`` method (``make_validator``) scores the baseline and every
    candidate in one batched pass; a plain callable is called once per condition.
    """
    probes = [Selection.from_features(list(c.features), saes, scale=scale).interventions() for c in candidates]
    many = getattr(validate, "many", None)
    if callable(many):
        scores = list(many([[]] + probes))
        if len(scores) != len(probes) + 1:
            raise ValueError(f"validate.many returned {len(scores)} scores for {len(probes) + 1} conditions")
    else:
        scores = [validate(p) for p in [[]] + probes]
    baseline = _score(scores[0], "the unsteered baseline")
    for c, score in zip(candidates, scores[1:]):
        c.score = _score(score, f"layer {c.layer} sign {c.sign:+d}")
        log.info("validated layer %d %s candidate %s: score %.4f (baseline %.4f)", c.layer,
                 "positive" if c.sign > 0 else "negative", [f.index for f in c.features], c.score, baseline)
    return baseline
