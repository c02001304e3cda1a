"""Controls and baselines as selection methods (METHOD.md §5-§6; issue 5).

Every method returns a ``corrsteer.method.selection.Selection``, so it runs through the same
steering, evaluation and report as CorrSteer itself. ``reference`` below is the
CorrSteer selection of the same collection (mode and scale as configured).

| method          | what is steered                                                              |
|-----------------|------------------------------------------------------------------------------|
| ``corrsteer``   | ``select(accumulators, mode)`` (METHOD.md §5)                                |
| ``random``      | the reference's layers, uniformly drawn other features (seeded), each with   |
|                 | the signed coefficient of the reference feature it replaces                  |
| ``shuffled``    | ``select`` on accumulators fed with permuted rewards (``corrsteer.studies.controls``) |
| ``negative``    | every layer's top negative feature together, ``−|c|·W_dec[i]``               |
| ``diff-in-means``| per reference layer ``mean(x | y=1) − mean(x | y=0)`` of the mean-pooled     |
|                 | residual stream, rescaled to the norm of the reference vector at that layer  |
| ``mi``          | per layer the feature of largest mutual information between ``1[z > 0]`` and |
|                 | ``y`` (SPARE-style), sign from r, coefficient as CorrSteer's; together       |
| ``fisher``      | the same with the Fisher score ``(μ₊ − μ₋)² / (σ²₊ + σ²₋ + ε)`` (DSG-style)  |
| ``scale-S``     | the reference's features with every coefficient times S (no re-validation)  |

Mutual information (nats) from the 2×2 table of ``a = 1[z > 0]`` and ``y``:
``MI = Σ_{a,y} p(a,y) log(p(a,y) / (p(a) p(y)))`` with ``0 log 0 = 0``. Fisher: the
class means and population variances ``σ²_c = m2_c / n_c`` come from one accumulator
per class (``ControlState.pos`` / ``.neg``), ``ε = 1e-12`` only keeps features that are
constant within both classes finite. Ties rank the lower index first.

Example:
    >>> sel = select_method("mi", collection, saes)                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from corrsteer.config import check_method, parse_scale
from corrsteer.method.features import Feature, Selection, feature_from_top
from corrsteer.method.selection import mean_neg, select, top_features, usable

log = logging.getLogger(__name__)

NEEDS_STATE = ("shuffled", "diff-in-means", "fisher")  # need the controls' extra collection state
FISHER_EPS = 1e-12


# ----------------------------------------------------------------------------- scores


def activity_counts(acc: Any) -> tuple[float, float, np.ndarray, np.ndarray]:
    """The 2×2 counts of a binary accumulator: ``(n, n_pos, n_active (d_sae,), n_pos_active (d_sae,))``."""
    if acc.kind != "binary":
        raise ValueError("mutual information needs binary rewards (kind='binary')")
    m = acc.moments()
    return m["n"], m["n_pos"], m["n_active"], m["n_pos_active"]


def mutual_information(acc: Any) -> np.ndarray:
    """(d_sae,) float64 mutual information (nats) between ``1[z > 0]`` and the reward."""
    n, n_pos, act, pos_act = activity_counts(acc)
    if n == 0:
        return np.zeros(acc.d_sae)
    cells = [(pos_act, act, n_pos), (act - pos_act, act, n - n_pos),  # active: y = 1, y = 0
             (n_pos - pos_act, n - act, n_pos), (n - act - (n_pos - pos_act), n - act, n - n_pos)]
    mi = np.zeros(acc.d_sae)
    for joint, n_a, n_y in cells:
        ok = joint > 0
        mi[ok] += joint[ok] / n * np.log(joint[ok] * n / (n_a[ok] * n_y))
    return np.maximum(mi, 0.0)  # rounding can leave -1e-17 for independent features


def class_moments(pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mean_pos, var_pos, mean_neg, var_neg)``, each (d_sae,), from the per-class accumulators."""
    out = []
    for acc, name in ((pos, "positive"), (neg, "negative")):
        m = acc.moments()
        if m["n"] == 0:
            raise ValueError(f"the {name} class has no sample; Fisher scores need both classes")
        out += [m["mean"], m["m2"] / m["n"]]
    return out[0], out[1], out[2], out[3]


def fisher_scores(pos: Any, neg: Any) -> np.ndarray:
    """(d_sae,) float64 ``(μ₊ − μ₋)² / (σ²₊ + σ²₋ + ε)`` from the per-class accumulators."""
    mu_p, var_p, mu_n, var_n = class_moments(pos, neg)
    return (mu_p - mu_n) ** 2 / (var_p + var_n + FISHER_EPS)


# -------------------------------------------------------------------------- selections


def _feature(acc: Any, layer: int, index: int, r: np.ndarray, negative_coefficient: str) -> Feature:
    """The feature ``index`` of ``layer``, signed by its r, with CorrSteer's coefficient rule."""
    row = {"index": index, "r": r[index], "coefficient": acc.coefficient()[index]}
    sign = 1 if r[index] > 0 else -1
    neg = float(mean_neg(acc)[index]) if sign < 0 else None
    return feature_from_top(row, layer, sign, neg, negative_coefficient)


def _selection(method: str, features: list[Feature], saes: Mapping[int, Any], scale: float, note: str = "",
               meta: dict[str, Any] | None = None, mode: str = "all") -> Selection:
    if not features and not note:
        note = f"{method}: no feature qualifies in any layer; steering nothing"
    if note:
        log.warning("%s", note)
    return Selection.from_features(features, saes, mode, scale=float(scale), note=note, meta=dict(meta or {}),
                                   method=method)


def select_negative(accumulators: Mapping[int, Any], saes: Mapping[int, Any], top_k: int = 1,
                    scale: float = 1.0, negative_coefficient: str = "mean_pos") -> Selection:
    """Every layer's ``top_k`` most negatively correlated features, steered together as ``−|c|·W_dec[i]``."""
    features = [f for layer in sorted(accumulators) if usable(accumulators[layer], layer)
                for f in top_features(accumulators[layer], -1, top_k, layer, negative_coefficient)]
    return _selection("negative", features, saes, scale)


def select_ranked(accumulators: Mapping[int, Any], saes: Mapping[int, Any], scores: Mapping[int, np.ndarray],
                  method: str, top_k: int = 1, scale: float = 1.0, negative_coefficient: str = "mean_pos") -> Selection:
    """Per layer the ``top_k`` features of largest ``scores[layer]`` (ties: lower index), together.

    Args:
        accumulators: layer -> the CorrSteer accumulator (sign of r and coefficient c).
        saes: layer -> SAE (``W_dec``).
        scores: layer -> (d_sae,) ranking score (MI, Fisher); features with ``r == 0`` or
            a score <= 0 never qualify.
        method: the name recorded in the selection (``"mi"``, ``"fisher"``).
        top_k, scale, negative_coefficient: as for ``select``.

    Returns:
        A ``Selection`` whose ``meta["scores"]`` lists ``[layer, index, score]`` per feature.
    """
    features, kept = [], []
    for layer in sorted(accumulators):
        acc = accumulators[layer]
        if not usable(acc, layer):
            continue
        r = acc.correlation()
        s = np.asarray(scores[layer], dtype=np.float64)  # (d_sae,)
        if s.shape != (acc.d_sae,):
            raise ValueError(f"scores[{layer}] has shape {s.shape}; expected ({acc.d_sae},)")
        idx = np.flatnonzero((r != 0) & (s > 0))
        for i in idx[np.lexsort((idx, -s[idx]))][:top_k]:
            features.append(_feature(acc, layer, int(i), r, negative_coefficient))
            kept.append([int(layer), int(i), float(s[i])])
    return _selection(method, features, saes, scale, meta={"scores": kept})


def select_random(reference: Selection, saes: Mapping[int, Any], seed: int = 0,
                  accumulators: Mapping[int, Any] | None = None, draw: int = 0) -> Selection:
    """The reference's layers with uniformly drawn other features and the same signed coefficients.

    In each layer the reference's features are replaced, in order, by distinct indices
    drawn without replacement (``numpy.random.default_rng([seed, layer])`` for draw 0,
    ``default_rng([seed, layer, draw])`` for draw > 0) from the features the reference does
    not steer there. ``r`` is the drawn feature's own correlation when ``accumulators``
    are given (else nan).
    """
    by_layer: dict[int, list[Feature]] = {}
    for f in reference.features:
        by_layer.setdefault(f.layer, []).append(f)
    features = []
    for layer, fs in sorted(by_layer.items()):
        d_sae = int(saes[layer].W_dec.shape[0])
        pool = np.setdiff1d(np.arange(d_sae), [f.index for f in fs])
        if len(pool) < len(fs):
            raise ValueError(f"layer {layer}: d_sae={d_sae} leaves no other feature to draw")
        key = [int(seed), int(layer)] + ([int(draw)] if draw else [])
        drawn = np.random.default_rng(key).choice(pool, size=len(fs), replace=False)
        r = accumulators[layer].correlation() if accumulators is not None and layer in accumulators else None
        for f, i in zip(fs, drawn):
            features.append(Feature(layer=layer, index=int(i), sign=f.sign, r=float("nan") if r is None else
                                    float(r[i]), coefficient=f.coefficient, mean_pos=f.mean_pos))
    note = "" if features else "random: the CorrSteer selection steers nothing, so neither does its random control"
    return _selection("random", features, saes, reference.scale, note, {"seed": int(seed), "draw": int(draw)},
                      reference.mode)


def scale_selection(reference: Selection, factor: float) -> Selection:
    """The reference's features with the selection's scale times ``factor`` (method ``scale-<factor>``)."""
    note = "" if reference.layers else f"scale-{factor:g}: the CorrSteer selection steers nothing"
    if note:
        log.warning("%s", note)
    return dataclasses.replace(reference, scale=reference.scale * float(factor), note=note or reference.note,
                               meta={"factor": float(factor)}, method=f"scale-{factor:g}",
                               directions=dict(reference.directions), coefficients=dict(reference.coefficients),
                               features=list(reference.features), candidates=list(reference.candidates))


def diff_in_means(resid: Any) -> np.ndarray:
    """(d_model,) ``mean(x̄ | y=1) − mean(x̄ | y=0)`` from an accumulator fed the per-sample mean residuals."""
    m = resid.moments()
    n, n_pos = m["n"], m["n_pos"]
    if n_pos == 0 or n_pos == n:
        raise ValueError("diff-in-means needs rewarded and unrewarded samples; every reward is equal")
    mean_neg = (n * m["mean"] - n_pos * m["mean_pos"]) / (n - n_pos)
    return m["mean_pos"] - mean_neg


def select_diff_in_means(resid: Mapping[int, Any], reference: Selection, norm: str = "matched",
                         scale: float = 1.0, layers: list[int] | None = None) -> Selection:
    """CAA-style vectors: per layer the class difference of the mean-pooled residual stream.

    Args:
        resid: layer -> accumulator of per-sample mean residuals (``ControlState.resid``).
        reference: the CorrSteer selection: its layers (and, for ``norm="matched"``, the
            norm of its vector at each layer).
        norm: ``"matched"`` (rescale each vector to the reference vector's norm, so only
            the direction differs) or ``"raw"`` (the plain difference times ``scale``).
        scale: factor for ``norm="raw"``.
        layers: layers to steer for ``norm="raw"`` (default: the reference's layers).

    Returns:
        A ``Selection`` with vectors but no SAE features (``meta["norms"]`` per layer).
    """
    if norm not in ("matched", "raw"):
        raise ValueError(f"norm={norm!r} must be 'matched' or 'raw'")
    use = reference.layers if norm == "matched" or layers is None else sorted(layers)
    ref_vectors = reference.vectors() if norm == "matched" else {}
    directions, coefficients, norms = {}, {}, {}
    for layer in use:
        if layer not in resid:
            raise ValueError(f"no residual means for layer {layer}; collect with controls=True at that layer")
        v = diff_in_means(resid[layer])  # (d_model,)
        raw = float(np.linalg.norm(v))
        directions[layer] = v[None, :].astype(np.float32)  # (1, d_model)
        if norm == "matched":  # the steered vector gets the norm of the reference's vector at its scale
            target = float(np.linalg.norm(ref_vectors[layer]))
            coefficients[layer] = np.array([target / raw if raw > 0 else 0.0])
        else:
            target = raw * float(scale)
            coefficients[layer] = np.array([1.0])
        norms[str(layer)] = {"raw": raw, "steered": target}
    note = "" if directions else "diff-in-means: the CorrSteer selection steers nothing, so there is no layer to steer"
    if note:
        log.warning("%s", note)
    return Selection(mode=reference.mode, features=[], directions=directions, coefficients=coefficients,
                     scale=float(scale) if norm == "raw" else 1.0, note=note, meta={"norm": norm, "norms": norms},
                     sites={l: reference.sites.get(l, "resid_post") for l in directions}, method="diff-in-means")


def select_method(method: str, collection: Any, saes: Mapping[int, Any], mode: str = "all",
                  validate: Callable[[Any], float] | None = None, top_k: int = 1, scale: float = 1.0,
                  seed: int = 0, reference: Selection | None = None, draw: int = 0,
                  negative_coefficient: str = "mean_pos") -> Selection:
    """The selection of ``method`` from one collection (see the module table).

    Args:
        method: one of ``METHODS`` or ``scale-S``.
        collection: a ``corrsteer.method.collection.Collection``; methods in ``NEEDS_STATE``
            need ``collection.controls`` (collect with ``controls=True``).
        saes: layer -> SAE.
        mode, validate, top_k, scale, negative_coefficient: CorrSteer's selection options (``select``).
        seed: seed of the random control.
        reference: the CorrSteer selection if already made (else made here with ``mode``).
        draw: which draw of the random and shuffled controls (0 .. draws − 1).

    Returns:
        A ``Selection`` with ``method`` set.
    """
    method = check_method(method)
    accs = collection.accumulators
    state = getattr(collection, "controls", None)
    if method in NEEDS_STATE and state is None:
        raise ValueError(f"method {method!r} needs the controls' collection state: collect again with "
                         "controls=True (`corrsteer controls`, or `corrsteer collect --method ...`)")
    if method in ("negative", "mi", "fisher", "shuffled"):
        if method == "negative":
            return select_negative(accs, saes, top_k, scale, negative_coefficient)
        if method == "mi":
            return select_ranked(accs, saes, {l: mutual_information(a) for l, a in accs.items()}, "mi", top_k, scale,
                                 negative_coefficient)
        if method == "fisher":
            scores = {l: fisher_scores(state.pos[l], state.neg[l]) if 0 < a.n_positive < a.n else np.zeros(a.d_sae)
                      for l, a in accs.items()}  # equal rewards: select_ranked skips the layer with a warning
            return select_ranked(accs, saes, scores, "fisher", top_k, scale, negative_coefficient)
        if not 0 <= draw < state.draws:
            raise ValueError(f"draw {draw} of the shuffled control: the collection kept {state.draws} draw(s); "
                             "collect again with more draws")
        sel = select(state.shuffled[draw], saes, mode, validate=validate, top_k=top_k, scale=scale,
                     negative_coefficient=negative_coefficient)
        sel.method = "shuffled"
        sel.meta["draw"] = int(draw)
        return sel
    if reference is None:
        reference = select(accs, saes, mode, validate=validate, top_k=top_k, scale=scale,
                           negative_coefficient=negative_coefficient)
    if method == "corrsteer":
        return reference
    if method == "random":
        return select_random(reference, saes, seed, accs, draw)
    if method == "diff-in-means":
        return select_diff_in_means(state.resid, reference)
    return scale_selection(reference, parse_scale(method))
