"""Checks shared by the SAE file readers: strict config values, tensor shapes, the result record.

Used by :mod:`corrsteer.sae.formats` (SAELens, ours) and :mod:`corrsteer.sae.gemma_scope`;
every error is a :class:`~corrsteer.errors.CorrsteerError` naming the file and the field.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer.errors import CorrsteerError
from corrsteer.sae.hook_names import hook_name_for

logger = logging.getLogger(__name__)

# Architecture names in SAE configs (SAELens, Gemma Scope) -> ours. "standard" is the plain ReLU SAE.
ARCHITECTURE_NAMES = {"standard": "relu", "relu": "relu", "jumprelu": "jumprelu", "jump_relu": "jumprelu",
                      "topk": "topk"}


@dataclass
class SAEFiles:
    """What :func:`read_sae` found: checked config fields, weights and metadata."""

    root: Path  # the SAE's folder
    cfg: dict[str, Any]  # the fields of corrsteer.SAEConfig (d_in, d_sae, architecture, k, ...)
    weights: dict[str, np.ndarray]  # W_enc, b_enc, W_dec, b_dec, and threshold for JumpReLU (float32)
    meta: dict[str, Any] = field(default_factory=dict)  # format, source, training metrics, ...



def flag(value: Any, name: str, where: Path, default: bool) -> bool:
    """A JSON boolean (or absent/None -> ``default``); the string "false" is refused, not read as true."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    raise CorrsteerError(f"{where}: field {name!r} is {value!r} ({type(value).__name__}); it must be the JSON "
                         "boolean true or false")


def integer(value: Any, name: str, where: Path) -> int | None:
    """A JSON integer (or None); 2.9, "3" and true are refused, 3.0 is accepted as 3."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not value.is_integer()):
        raise CorrsteerError(f"{where}: field {name!r} is {value!r}; it must be an integer")
    return int(value)


def sae_files(root: Path, W_enc: np.ndarray, b_enc: np.ndarray, W_dec: np.ndarray, b_dec: np.ndarray,
           threshold: np.ndarray | None, arch: str, k: int | None, apply_b_dec: bool, layer: int | None, site: str,
           model_name: str | None, meta: dict[str, Any]) -> SAEFiles:
    """Final checks shared by every format; the :class:`SAEFiles` of one SAE."""
    if threshold is not None and np.any(threshold < 0):
        # Negative thresholds gate nothing beyond the ReLU (SAELens applies threshold.relu()).
        logger.info("%s: %d negative JumpReLU thresholds clamped to 0", root, int(np.sum(threshold < 0)))
        threshold = np.maximum(threshold, 0).astype(np.float32)
    if arch == "topk" and (k is None or not 0 < k <= W_enc.shape[1]):
        raise CorrsteerError(f"{root}: TopK field 'k'={k} is outside 1..d_sae={W_enc.shape[1]}")
    weights = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if threshold is not None:
        weights["threshold"] = threshold
    cfg = {"d_in": int(W_enc.shape[0]), "d_sae": int(W_enc.shape[1]), "architecture": arch,
           "k": k if arch == "topk" else None, "apply_b_dec_to_input": bool(apply_b_dec),
           "hook_name": hook_name_for(layer, site), "layer": layer, "site": site, "model_name": model_name}
    return SAEFiles(root, cfg, weights, meta)


def take(w: dict[str, np.ndarray], name: str, path: Path, alias: str | None = None) -> np.ndarray:
    for n in (name, alias, name.upper() if name.startswith("w_") else None):
        if n is not None and n in w:
            arr = w[n]
            if not np.issubdtype(arr.dtype, np.floating):
                raise CorrsteerError(f"{path}: tensor {n!r} has dtype {arr.dtype}, expected float")
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.all(np.isfinite(arr)):
                raise CorrsteerError(f"{path}: tensor {n!r} holds NaN or inf values")
            return arr
    raise CorrsteerError(f"{path}: missing tensor {name!r} (found: {sorted(w)})")


def check_shapes(W_enc: np.ndarray, W_dec: np.ndarray, b_enc: np.ndarray, b_dec: np.ndarray,
                  threshold: np.ndarray | None, path: Path) -> tuple[int, int]:
    if W_enc.ndim != 2:
        raise CorrsteerError(f"{path}: W_enc has shape {W_enc.shape}, expected (d_in, d_sae)")
    d_in, d_sae = W_enc.shape
    want = {"W_dec": (W_dec, (d_sae, d_in)), "b_enc": (b_enc, (d_sae,)), "b_dec": (b_dec, (d_in,))}
    if threshold is not None:
        want["threshold"] = (threshold, (d_sae,))
    for name, (arr, shape) in want.items():
        if arr.shape != shape:
            raise CorrsteerError(f"{path}: {name} has shape {arr.shape}, expected {shape} "
                                 f"(W_enc is (d_in={d_in}, d_sae={d_sae}))")
    return d_in, d_sae


def vector(arr: np.ndarray, n: int, name: str, path: Path) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        return np.full(n, arr[0], dtype=np.float32)
    if arr.shape != (n,):
        raise CorrsteerError(f"{path}: {name} has shape {arr.shape}, expected ({n},)")
    return arr


def layer_from_path(path: Path) -> int | None:
    for part in reversed(path.parts):
        m = re.match(r"layer_(\d+)(?:_|$)", part)
        if m:
            return int(m.group(1))
    return None


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CorrsteerError(f"{path} is missing; it must sit beside the weights file")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorrsteerError(f"{path}: not valid JSON ({exc}); the file is truncated or corrupt") \
            from exc
    if not isinstance(cfg, dict):
        raise CorrsteerError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg
