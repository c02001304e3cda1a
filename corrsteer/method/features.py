"""What a selection steers: :class:`Feature`, :class:`Candidate` and :class:`Selection`.

A feature's coefficient is ``c_i = mean_pos`` (the accumulator's coefficient) for a
positive feature and ``−|c_i|`` for a negative one (METHOD.md §5); it stays float64 from
the accumulator to the C kernel that builds the float32 vector. A :class:`Selection`
keeps, per layer, the decoder rows of its features (``directions``) and their
coefficients, and applies its ``scale`` in exactly one place, :meth:`Selection.vectors`:
``v_l = Σ_k (scale · c_k) · W_dec[i_k]`` (``corrsteer.core.steering_vector``). A
selection steers with ``with sel.apply(model): ...`` and saves to a folder
(``selection.json`` + ``vectors.safetensors``) that needs no SAE to load.

Example:
    >>> sel = Selection.load("runs/bbq_ambig-all-seed0/selection")      # doctest: +SKIP
    >>> with sel.apply(model, scale=2.0):                                # doctest: +SKIP
    ...     out = model.generate(**batch, max_new_tokens=32)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer.config import HOOK_SITES, MODES, POSITIONS, check_choice
from corrsteer.core import steering_vector
from corrsteer.sae import as_saes
from corrsteer.storage.atomic import write_json
from corrsteer.storage.control_vector import blocks_from_sites, read_control_vector, write_control_vector
from corrsteer.storage.safetensors import read_tensors, write_tensors

__all__ = ["Candidate", "Feature", "Interventions", "Selection", "Validator", "feature_from_top"]

SELECTION_JSON = "selection.json"
VECTORS_FILE = "vectors.safetensors"

Interventions = list[tuple[int, np.ndarray, str]]
Validator = Callable[[Interventions], float]


@dataclass(frozen=True)
class Feature:
    """One steered SAE feature."""

    layer: int  # decoder layer whose SAE the feature belongs to
    index: int  # feature index in that SAE (row of W_dec)
    sign: int  # +1: positively correlated (added); -1: negatively correlated (subtracted)
    r: float  # point-biserial correlation of the pooled activation with the reward
    coefficient: float  # signed multiplier of W_dec[index] before the selection's scale: c or −|c|
    mean_pos: float  # mean pooled activation over rewarded samples (the accumulator's coefficient)
    mean_neg: float | None = None  # mean pooled activation over unrewarded samples, when it was read


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
    """What is steered and why: features, their decoder directions and coefficients, per layer."""

    mode: str  # single | global | all | pruned (METHOD.md §5)
    features: list[Feature]  # every steered feature (empty: steer nothing, or raw directions only)
    directions: dict[int, np.ndarray]  # layer -> (n_terms, d_in) float32: W_dec rows (or raw directions)
    coefficients: dict[int, np.ndarray]  # layer -> (n_terms,) float64 multipliers, before the scale
    candidates: list[Candidate] = field(default_factory=list)  # every candidate considered, with scores
    baseline_score: float | None = None  # unsteered validation score (global/pruned), else None
    sites: dict[int, str] = field(default_factory=dict)  # layer -> site of its SAE (resid_post if absent)
    top_k: int = 1  # features per candidate
    scale: float = 1.0  # factor on every coefficient, applied by vectors() and nowhere else
    note: str = ""  # human-readable remark (e.g. "nothing kept: ...")
    meta: dict[str, Any] = field(default_factory=dict)  # free-form: task, model, n_val, n_train
    method: str = "corrsteer"  # corrsteer, or a control/baseline (corrsteer.method.baselines)

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise ValueError(f"scale={self.scale!r} must be a finite number")
        if set(self.directions) != set(self.coefficients):
            raise ValueError(f"directions are for layers {sorted(self.directions)} but coefficients for "
                             f"{sorted(self.coefficients)}")
        for layer in self.directions:
            d = np.ascontiguousarray(self.directions[layer], dtype=np.float32)
            c = np.ascontiguousarray(self.coefficients[layer], dtype=np.float64).reshape(-1)
            if d.ndim != 2 or d.shape[0] != c.shape[0] or d.shape[0] < 1:
                raise ValueError(f"layer {layer}: directions of shape {d.shape} do not match {c.shape[0]} "
                                 "coefficients; expected (n_terms >= 1, d_in)")
            if not (np.isfinite(d).all() and np.isfinite(c).all()):
                raise ValueError(f"layer {layer}: the directions or coefficients contain NaN or Inf")
            self.directions[layer], self.coefficients[layer] = d, c
        for layer, site in self.sites.items():
            check_choice(f"sites[{layer}]", site, HOOK_SITES)

    @classmethod
    def from_features(cls, features: list[Feature], saes: Mapping[int, Any], mode: str = "all",
                      **fields: Any) -> Selection:
        """The selection steering ``features``, with the decoder rows of their SAEs.

        Args:
            features: the features, in the order their terms are summed per layer.
            saes: layer -> SAE (``W_dec``, ``site``) for every feature's layer.
            mode: the selection mode recorded.
            **fields: any other field (``candidates``, ``scale``, ``note``, ``meta``, ``method``...).
        """
        saes = as_saes(saes)  # SAELens SAEs too
        by_layer: dict[int, list[Feature]] = {}
        for f in features:
            by_layer.setdefault(f.layer, []).append(f)
        directions, coefficients, sites = {}, {}, {}
        for layer, fs in sorted(by_layer.items()):
            W_dec = np.asarray(saes[layer].W_dec)  # (d_sae, d_in)
            directions[layer] = W_dec[[f.index for f in fs]]  # (n_feat, d_in)
            coefficients[layer] = np.array([f.coefficient for f in fs], dtype=np.float64)  # (n_feat,)
            sites[layer] = str(getattr(saes[layer], "site", None) or "resid_post")
        return cls(mode=mode, features=list(features), directions=directions, coefficients=coefficients,
                   sites=sites, **fields)

    def describe(self) -> str:
        """What the selection steers, in one line: ``L3 +#12 (c=+1.9); L6 −#40 (c=−2.2)``, or its vectors' layers."""
        if self.features:
            return "; ".join(f"L{f.layer} {'+' if f.sign > 0 else '−'}#{f.index} (r={f.r:+.2f}, c={_signed(f.coefficient)})"
                             for f in self.features)
        if self.layers:
            norms = self.meta.get("norms", {})
            return "; ".join(f"L{l} vector (norm {norms.get(str(l), {}).get('steered', float('nan')):.3g})"
                             for l in self.layers)
        return f"nothing ({self.note or 'no feature selected'})"

    def __str__(self) -> str:
        scale = "" if self.scale == 1.0 else f", scale {self.scale:g}"
        return f"{self.method} selection ({self.mode}{scale}): {self.describe()}"

    @property
    def layers(self) -> list[int]:
        """The steered layers, sorted ([] = steer nothing)."""
        return sorted(self.directions)

    def vectors(self, scale: float | None = None) -> dict[int, np.ndarray]:
        """``{layer: (d_in,) float32}``: ``Σ_k (scale · c_k) · direction_k``, summed in float64 by the C core.

        Args:
            scale: the factor on every coefficient; None = the selection's own ``scale``.
        """
        s = self.scale if scale is None else float(scale)
        if not math.isfinite(s):
            raise ValueError(f"scale={scale!r} must be finite")
        return {layer: steering_vector(self.directions[layer], np.arange(len(self.coefficients[layer])),
                                       self.coefficients[layer] * s) for layer in self.layers}

    def interventions(self, scale: float | None = None) -> Interventions:
        """``[(layer, (d_in,) float32 vector, site)]`` sorted by layer; [] = steer nothing."""
        return [(layer, v, self.sites.get(layer, "resid_post")) for layer, v in self.vectors(scale).items()]

    def apply(self, model: Any, scale: float | None = None, positions: str = "generation") -> Any:
        """Steer ``model`` while the ``with`` block runs: ``with sel.apply(model): model.generate(...)``.

        Args:
            model: the transformers model the SAEs belong to.
            scale: the factor on every coefficient; None = the selection's own ``scale``.
            positions: ``"generation"`` (METHOD.md §2) or ``"all"`` (prompt positions too, as
                llama.cpp's control vectors do).
        """
        from corrsteer.hooks import steer

        check_choice("positions", positions, POSITIONS)
        return steer(model, self.interventions(scale), positions=positions)

    def to_gguf(self, path: str | os.PathLike[str], model_hint: str, scale: float | None = None) -> Path:
        """Write the vectors at ``scale`` (None: the selection's) as a llama.cpp control vector.

        ``resid_post`` of layer ``l`` becomes ``direction.l``, ``resid_pre`` of layer ``l``
        ``direction.(l-1)`` (:mod:`corrsteer.storage.control_vector`); llama.cpp adds it at every
        position, prompt included. Raises ``ValueError`` for what llama.cpp cannot steer (block 0).
        """
        return write_control_vector(path, blocks_from_sites(self.interventions(scale)), model_hint)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str], d_model: int | None = None) -> Selection:
        """A llama.cpp control vector as a selection: ``direction.N`` steers layer N's output, scale 1.

        Args:
            path: a control-vector GGUF (ours, repeng's, llama.cpp's ``cvector-generator``'s).
            d_model: the model's width; a file of another width raises ``ValueError``.
        """
        cv = read_control_vector(path, d_model=d_model)
        return cls(mode="all", features=[], directions={n: v[None, :] for n, v in cv.directions.items()},
                   coefficients={n: np.ones(1) for n in cv.directions}, sites={n: "resid_post" for n in cv.directions},
                   method="control-vector", note=f"llama.cpp control vector {os.fspath(path)}",
                   meta={"source": os.fspath(path), "model_hint": cv.model_hint, "layer_count": cv.layer_count})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (coefficients exact; the directions go to the safetensors file)."""
        return {
            "mode": self.mode, "method": self.method, "top_k": self.top_k, "scale": self.scale,
            "baseline_score": self.baseline_score, "note": self.note,
            "features": [asdict(f) for f in self.features],
            "candidates": [{"layer": c.layer, "sign": c.sign, "score": c.score, "kept": c.kept,
                            "features": [asdict(f) for f in c.features]} for c in self.candidates],
            "layers": self.layers,
            "coefficients": {str(l): self.coefficients[l].tolist() for l in self.layers},
            "sites": {str(l): self.sites.get(l, "resid_post") for l in self.layers},
            "meta": self.meta,
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``selection.json`` and ``vectors.safetensors`` (``directions.<layer>``) atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_tensors(d / VECTORS_FILE, {f"directions.{l}": self.directions[l] for l in self.layers})
        write_json(d / SELECTION_JSON, self.to_dict(), indent=2)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Selection:
        """Read a folder written by :meth:`save`.

        Raises:
            ValueError: the folder or one of its files is missing or malformed (the message names it).
        """
        d = Path(directory)
        missing = [name for name in (SELECTION_JSON, VECTORS_FILE) if not (d / name).is_file()]
        if missing:
            raise ValueError(f"selection folder {str(d)!r} lacks {', '.join(missing)}; "
                             "write it with `corrsteer select` or Selection.save()")
        path = d / SELECTION_JSON
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            features = [_feature(f) for f in doc["features"]]
            candidates = [Candidate(layer=int(c["layer"]), sign=int(c["sign"]),
                                    features=tuple(_feature(f) for f in c["features"]),
                                    score=None if c["score"] is None else float(c["score"]), kept=bool(c["kept"]))
                          for c in doc["candidates"]]
            coefficients = {int(l): np.asarray(v, dtype=np.float64) for l, v in doc["coefficients"].items()}
            sites = {int(l): str(s) for l, s in doc.get("sites", {}).items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{str(path)!r} is malformed ({exc!r}); rewrite it with `corrsteer select`") from exc
        try:
            tensors = read_tensors(d / VECTORS_FILE)
        except Exception as exc:  # a CorrsteerError naming the file
            raise ValueError(str(exc)) from exc
        directions = {}
        for key, v in tensors.items():
            layer = key.removeprefix("directions.")
            if not layer.isdigit() or v.ndim != 2:
                raise ValueError(f"{str(d / VECTORS_FILE)!r} has tensor {key!r} of shape {v.shape}; expected "
                                 "directions.<layer> of shape (n_terms, d_in)")
            directions[int(layer)] = v
        counts = {l: sum(1 for f in features if f.layer == l) for l in {f.layer for f in features}}
        rows = {l: len(v) for l, v in directions.items()}
        if set(directions) != set(coefficients) or \
                any(rows[l] != len(coefficients[l]) for l in directions) or \
                (features and counts != {l: len(c) for l, c in coefficients.items()}):
            raise ValueError(f"{str(d)!r}: {SELECTION_JSON} has coefficients for layers {sorted(coefficients)} "
                             f"({counts} features per layer) but {VECTORS_FILE} has {rows} directions; the two "
                             "files do not belong together")
        try:
            return cls(mode=doc["mode"], features=features, directions=directions, coefficients=coefficients,
                       candidates=candidates, baseline_score=doc.get("baseline_score"), sites=sites,
                       top_k=int(doc.get("top_k", 1)), scale=float(doc.get("scale", 1.0)), note=doc.get("note", ""),
                       meta=doc.get("meta", {}), method=str(doc.get("method", "corrsteer")))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{str(d)!r} does not hold a valid selection: {exc}") from exc


def _signed(x: float) -> str:
    return "0" if abs(x) < 5e-4 else f"{x:+.3g}"  # never "-0": a zero coefficient steers nothing


def _feature(d: dict[str, Any]) -> Feature:
    return Feature(layer=int(d["layer"]), index=int(d["index"]), sign=int(d["sign"]), r=float(d["r"]),
                   coefficient=float(d["coefficient"]), mean_pos=float(d["mean_pos"]),
                   mean_neg=None if d.get("mean_neg") is None else float(d["mean_neg"]))


def feature_from_top(row: Any, layer: int, sign: int, mean_neg: float | None = None,
                     negative_coefficient: str = "mean_pos") -> Feature:
    """A :class:`Feature` from one row of ``CorrelationAccumulator.top`` (index, r, coefficient = mean_pos).

    A positive feature is added with ``c = mean_pos``; a negative one is subtracted with ``−|mean_pos|``
    (the paper's rule, METHOD.md §5) or, with ``negative_coefficient="mean_neg"``, ``−|mean_neg|``.
    """
    c = float(row["coefficient"])
    if sign > 0:
        coef = c
    elif negative_coefficient == "mean_neg":
        if mean_neg is None:
            raise ValueError("negative_coefficient='mean_neg' needs the feature's mean over unrewarded samples")
        coef = -abs(float(mean_neg))
    else:
        coef = -abs(c)
    return Feature(layer=int(layer), index=int(row["index"]), sign=int(sign), r=float(row["r"]), coefficient=coef,
                   mean_pos=c, mean_neg=None if mean_neg is None else float(mean_neg))
