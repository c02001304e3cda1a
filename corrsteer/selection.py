"""Feature selection from correlations: single / global / all / pruned (METHOD.md §5).

Per layer l the candidates are the top positive features (``r > 0``, largest r
first) and the top negative features (``r < 0``, smallest r first); with
``top_k = 1`` these are ``i⁺_l = argmax r`` and ``i⁻_l = argmin r``. A candidate
with ``top_k = k > 1`` is the k best features of one sign in one layer (fewer
when fewer have that sign), steered together as one unit.

The steering vector of a feature is ``c_i · W_dec[i]`` for a positive feature and
``−|c_i| · W_dec[i]`` for a negative one, with ``c = mean_pos`` (the coefficient of
the accumulator), times ``scale``. ``Feature.coefficient`` stores that signed,
scaled multiplier, so ``vector = Σ coefficient · W_dec[index]`` per layer.

| mode     | steered                                                                 |
|----------|-------------------------------------------------------------------------|
| single   | the positive candidate with the largest r over all layers               |
| global   | every layer's positive and negative candidate validated alone; the best |
| all      | every layer's positive candidate, together                              |
| pruned   | per layer the better of its two candidates, kept iff its validation     |
|          | score is strictly above the unsteered validation score; kept together   |

Deterministic ties: within a layer, features with equal r go to the lower index;
``single`` takes the lower layer among equal r; ``global`` and ``pruned`` prefer
the positive candidate over the negative one at equal validation score, and
``global`` then the lower layer. ``validate`` is called once with no intervention
(the baseline, only for global/pruned) and once per candidate; each call should be
one batched generation pass over the validation split (the pipeline's is).

Example:
    >>> sel = select(accumulators, saes, "all")                     # doctest: +SKIP
    >>> with corrsteer.hooks.steer(model, sel.interventions()): ... # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer import atomic
from corrsteer.config import MODES, check_choice
from corrsteer.steering import steering_vector

log = logging.getLogger(__name__)

SELECTION_JSON = "selection.json"
VECTORS_FILE = "vectors.safetensors"

Interventions = list[tuple[int, np.ndarray] | tuple[int, np.ndarray, str]]
Validator = Callable[[Interventions], float]


@dataclass(frozen=True)
class Feature:
    """One steered SAE feature."""

    layer: int  # decoder layer whose SAE the feature belongs to
    index: int  # feature index in that SAE (row of W_dec)
    sign: int  # +1: positively correlated (added); -1: negatively correlated (subtracted)
    r: float  # point-biserial correlation of the pooled activation with the reward
    coefficient: float  # signed, scaled multiplier of W_dec[index] in the steering vector
    mean_pos: float  # c = mean pooled activation over positive samples (before sign and scale)


@dataclass
class Candidate:
    """One unit that selection considers: the top-k features of one sign in one layer."""

    layer: int  # decoder layer
    sign: int  # +1 positive candidate, -1 negative candidate
    features: tuple[Feature, ...]  # the features steered together, best first
    score: float | None = None  # validation score when steered alone (None: not validated)
    kept: bool = False  # steered in the final selection


@dataclass
class Selection:
    """The result of ``select``: what is steered and why."""

    mode: str  # single | global | all | pruned
    features: list[Feature]  # every steered feature (empty: steer nothing)
    candidates: list[Candidate]  # every candidate considered, with validation scores
    baseline_score: float | None  # unsteered validation score (global/pruned), else None
    vectors: dict[int, np.ndarray]  # layer -> (d_in,) float32 steering vector, summed per layer
    top_k: int = 1  # features per candidate
    scale: float = 1.0  # factor applied to every coefficient
    note: str = ""  # human-readable remark (e.g. "nothing kept: ...")
    meta: dict[str, Any] = field(default_factory=dict)  # free-form: task, model, n_val
    sites: dict[int, str] = field(default_factory=dict)  # layer -> the SAE's site when not "resid_post"
    method: str = "corrsteer"  # corrsteer, or a control/baseline of corrsteer.baselines (random, mi, ...)

    def interventions(self) -> Interventions:
        """The steering vectors as ``[(layer, (d_in,) float32)]`` sorted by layer; [] = steer nothing.

        A layer whose SAE reads another site than ``resid_post`` gives ``(layer, vector, site)``,
        which ``corrsteer.hooks.steer`` applies at that site (METHOD.md §1).
        """
        return [(layer, self.vectors[layer], self.sites[layer]) if self.sites.get(layer, "resid_post") != "resid_post"
                else (layer, self.vectors[layer]) for layer in sorted(self.vectors)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (without the vectors)."""
        return {
            "mode": self.mode,
            "method": self.method,
            "top_k": self.top_k,
            "scale": self.scale,
            "baseline_score": self.baseline_score,
            "note": self.note,
            "features": [asdict(f) for f in self.features],
            "candidates": [
                {"layer": c.layer, "sign": c.sign, "score": c.score, "kept": c.kept,
                 "features": [asdict(f) for f in c.features]}
                for c in self.candidates
            ],
            "layers": sorted(self.vectors),
            "sites": {str(l): s for l, s in sorted(self.sites.items())},
            "meta": self.meta,
        }


def top_features(acc: Any, sign: int, k: int, layer: int, scale: float = 1.0) -> tuple[Feature, ...]:
    """The k features of one sign with the largest |r| (ties: lower index first).

    Args:
        acc: a ``CorrelationAccumulator`` (its ``correlation()`` and ``coefficient()``).
        sign: +1 for r > 0 (largest first), -1 for r < 0 (smallest first).
        k: how many at most.
        layer: the layer recorded in each ``Feature``.
        scale: factor on the coefficient.

    Returns:
        Up to k ``Feature``s; empty when no feature has that sign.
    """
    r = np.asarray(acc.correlation(), dtype=np.float64)  # (d_sae,)
    c = np.asarray(acc.coefficient(), dtype=np.float64)  # (d_sae,)
    idx = np.flatnonzero(r > 0) if sign > 0 else np.flatnonzero(r < 0)
    order = np.lexsort((idx, -sign * r[idx]))  # primary: -sign*r ascending; secondary: index
    out = []
    for i in idx[order][:k]:
        coef = float(c[i]) if sign > 0 else -abs(float(c[i]))
        out.append(Feature(layer=int(layer), index=int(i), sign=sign, r=float(r[i]),
                           coefficient=coef * float(scale), mean_pos=float(c[i])))
    return tuple(out)


def _vectors(features: list[Feature], saes: Mapping[int, Any]) -> dict[int, np.ndarray]:
    by_layer: dict[int, list[Feature]] = {}
    for f in features:
        by_layer.setdefault(f.layer, []).append(f)
    vectors = {}
    for layer, fs in by_layer.items():
        W_dec = np.ascontiguousarray(saes[layer].W_dec, dtype=np.float32)  # (d_sae, d_in)
        idx = np.array([f.index for f in fs], dtype=np.int64)  # (n_feat,)
        coef = np.array([f.coefficient for f in fs], dtype=np.float32)  # (n_feat,)
        vectors[layer] = np.asarray(steering_vector(W_dec, idx, coef), dtype=np.float32)  # (d_in,)
    return vectors


def _sites(features: list[Feature], saes: Mapping[int, Any]) -> dict[int, str]:
    """layer -> site for the layers of ``features`` whose SAE reads another site than resid_post."""
    sites = {f.layer: str(getattr(saes[f.layer], "site", None) or "resid_post") for f in features}
    return {l: s for l, s in sites.items() if s != "resid_post"}


def _check_inputs(accumulators: Mapping[int, Any], saes: Mapping[int, Any], mode: str,
                  validate: Validator | None, top_k: int, scale: float) -> None:
    check_choice("mode", mode, MODES)
    if not accumulators:
        raise ValueError("accumulators is empty: collect at least one layer before selecting")
    if mode in ("global", "pruned") and not callable(validate):
        raise ValueError(f"mode={mode!r} needs validate=callable(interventions) -> score on the validation split")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be a positive integer")
    if not np.isfinite(float(scale)):
        raise ValueError(f"scale={scale!r} must be finite")
    for layer, acc in accumulators.items():
        if layer not in saes:
            raise ValueError(f"no SAE for layer {layer}; saes has layers {sorted(saes)}")
        d_sae = saes[layer].W_dec.shape[0]
        if acc.d_sae != d_sae:
            raise ValueError(f"layer {layer}: accumulator has d_sae={acc.d_sae} but the SAE has d_sae={d_sae}; "
                             "use the SAEs the accumulators were collected with")


def _score(validate: Validator, interventions: Interventions, what: str) -> float:
    score = validate(interventions)
    score = float(score)
    if not np.isfinite(score):
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


def select(accumulators: Mapping[int, Any], saes: Mapping[int, Any], mode: str,
           validate: Validator | None = None, top_k: int = 1, scale: float = 1.0) -> Selection:
    """Choose the features to steer from per-layer correlations (METHOD.md §5).

    Args:
        accumulators: layer -> ``CorrelationAccumulator`` filled by collection.
        saes: layer -> SAE (its ``W_dec: (d_sae, d_in)``) for every accumulator's layer.
        mode: ``"single"``, ``"global"``, ``"all"`` or ``"pruned"``.
        validate: ``validate(interventions) -> score`` on the validation split; needed
            by ``global`` and ``pruned``; ``[]`` means unsteered.
        top_k: features per candidate (the k best of one sign in one layer).
        scale: factor on every coefficient.

    Returns:
        A ``Selection``; ``features == []`` when nothing is steered (``note`` says why).

    Raises:
        ValueError: unknown mode, missing validate, SAE/accumulator mismatch.
    """
    _check_inputs(accumulators, saes, mode, validate, top_k, scale)
    layers = sorted(accumulators)
    pos: dict[int, Candidate] = {}
    neg: dict[int, Candidate] = {}
    if layers:  # every layer saw the same rewards
        _warn_if_few(accumulators[layers[0]])
    for layer in layers:
        acc = accumulators[layer]
        if acc.n_positive == 0 or acc.n_positive == acc.n:
            log.warning("layer %d: all %d collection rewards are %d, so every correlation is 0; "
                        "no candidate from this layer", layer, int(acc.n), int(acc.n_positive > 0))
            continue
        p = top_features(acc, +1, top_k, layer, scale)
        q = top_features(acc, -1, top_k, layer, scale)
        if p:
            pos[layer] = Candidate(layer, +1, p)
        if q:
            neg[layer] = Candidate(layer, -1, q)

    baseline: float | None = None
    note = ""
    if mode == "single":
        candidates = [pos[l] for l in layers if l in pos]
        chosen = []
        if candidates:
            best = max(candidates, key=lambda c: (c.features[0].r, -c.layer))  # ties: lower layer
            chosen = [best]
    elif mode == "all":
        candidates = [pos[l] for l in layers if l in pos]
        chosen = list(candidates)
    else:
        candidates = [c for l in layers for c in (pos.get(l), neg.get(l)) if c is not None]
        baseline = _validate_all(candidates, saes, validate) if candidates else None
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
    features = [f for c in chosen for f in c.features]
    return Selection(mode=mode, features=features, candidates=candidates, baseline_score=baseline,
                     vectors=_vectors(features, saes), top_k=top_k, scale=float(scale), note=note,
                     sites=_sites(features, saes))


def _validate_all(candidates: list[Candidate], saes: Mapping[int, Any], validate: Any) -> float:
    """Score the unsteered baseline once, then each candidate alone (sets ``c.score``); return the baseline."""
    baseline = _score(validate, [], "the unsteered baseline")
    for c in candidates:
        features = list(c.features)
        probe = Selection("probe", features, [], None, _vectors(features, saes), sites=_sites(features, saes))
        c.score = _score(validate, probe.interventions(), f"layer {c.layer} sign {c.sign:+d}")
        log.info("validated layer %d %s candidate %s: score %.4f (baseline %.4f)", c.layer,
                 "positive" if c.sign > 0 else "negative", [f.index for f in c.features], c.score, baseline)
    return baseline


def _feature(d: dict[str, Any]) -> Feature:
    return Feature(layer=int(d["layer"]), index=int(d["index"]), sign=int(d["sign"]), r=float(d["r"]),
                   coefficient=float(d["coefficient"]), mean_pos=float(d.get("mean_pos", abs(d["coefficient"]))))


def save_selection(sel: Selection, directory: str | os.PathLike[str]) -> Path:
    """Write ``selection.json`` and ``vectors.safetensors`` (keys ``layer_{L}``) atomically.

    Args:
        sel: the selection.
        directory: folder to create or overwrite the two files in.

    Returns:
        The folder as a ``Path``.
    """
    from safetensors.numpy import save

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"layer_{l}": np.ascontiguousarray(v, dtype=np.float32) for l, v in sel.vectors.items()}
    atomic.write_bytes(d / VECTORS_FILE, save(tensors))
    atomic.write_json(d / SELECTION_JSON, sel.to_dict(), indent=2)
    return d


def load_selection(directory: str | os.PathLike[str]) -> Selection:
    """Read a folder written by ``save_selection``.

    Raises:
        ValueError: the folder or one of its files is missing or malformed (the message names it).
    """
    from safetensors.numpy import load_file

    d = Path(directory)
    missing = [name for name in (SELECTION_JSON, VECTORS_FILE) if not (d / name).is_file()]
    if missing:
        raise ValueError(f"selection folder {str(d)!r} lacks {', '.join(missing)}; "
                         "write it with `corrsteer select` or save_selection()")
    try:
        doc = json.loads((d / SELECTION_JSON).read_text())
        check_choice("mode", doc["mode"], MODES)
        features = [_feature(f) for f in doc["features"]]
        candidates = [Candidate(layer=int(c["layer"]), sign=int(c["sign"]),
                                features=tuple(_feature(f) for f in c["features"]),
                                score=None if c["score"] is None else float(c["score"]), kept=bool(c["kept"]))
                      for c in doc["candidates"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{str(d / SELECTION_JSON)!r} is malformed ({exc!r}); rewrite it with `corrsteer select`") from exc
    try:
        raw = load_file(str(d / VECTORS_FILE))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{str(d / VECTORS_FILE)!r} is not a readable safetensors file ({exc})") from exc
    vectors = {}
    for key, v in raw.items():
        if not key.startswith("layer_") or not key[6:].isdigit() or v.ndim != 1:
            raise ValueError(f"{str(d / VECTORS_FILE)!r} has key {key!r} of shape {v.shape}; expected layer_<L> (d_in,)")
        vectors[int(key[6:])] = v.astype(np.float32)
    layers = {f.layer for f in features}
    if (features or doc.get("method", "corrsteer") == "corrsteer") and layers != set(vectors):
        raise ValueError(f"{str(d)!r}: features are in layers {sorted(layers)} but the vectors are for "
                         f"{sorted(vectors)}; the two files do not belong together")
    return Selection(mode=doc["mode"], features=features, candidates=candidates,
                     baseline_score=doc.get("baseline_score"), vectors=vectors, top_k=int(doc.get("top_k", 1)),
                     scale=float(doc.get("scale", 1.0)), note=doc.get("note", ""), meta=doc.get("meta", {}),
                     sites={int(l): str(s) for l, s in doc.get("sites", {}).items()},
                     method=str(doc.get("method", "corrsteer")))
