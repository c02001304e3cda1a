"""NumPy-facing wrappers over the C core ``corrsteer.core._core``.

Functions (``corrsteer.core.reference`` mirrors every one with the same signature):
    sae_encode(sae, x) -> (..., d_sae)                                   f = encode(x)
    sae_encode_pooled(sae, x, mask=None, mode="max") -> (n_seq, d_sae)   fused encode + pool
    sae_pool_rows(sae, x, seq, n_seq, mode="max") -> (z, counts)         rows with seq ids
    steering_vector(W_dec, features, coefficients) -> (d_in,)            sum_k c_k W_dec[f_k]
    add_to_rows(x, v, mask=None) -> None                                 x[mask] += v in place
    build_info() -> dict; get_num_threads() -> int; set_num_threads(n) -> None

``sae`` is anything with the attributes of :class:`corrsteer.SAE` (``W_enc``,
``b_enc``, ``b_dec``, ``threshold``, ``architecture``, ``k``, ``apply_b_dec_to_input``,
``d_in``, ``d_sae``). Inputs: float32 C-contiguous arrays pass to C without a copy;
other float dtypes (float16, float64, ...) and strided arrays are converted to
float32 C-contiguous copies; integer, bool or complex data raise ``TypeError``;
wrong shapes, NaN/Inf in activations, and empty batches raise ``ValueError`` that
names the argument and the fix. The GIL is released while C works.

Example:
    >>> import numpy as np, corrsteer
    >>> sae = corrsteer.SAE(np.eye(2, dtype=np.float32), np.zeros(2, np.float32),
    ...                     np.eye(2, dtype=np.float32), np.zeros(2, np.float32),
    ...                     architecture="relu")
    >>> sae_encode(sae, np.array([[1.0, -1.0]], np.float32))
    array([[1., 0.]], dtype=float32)
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
from typing import Any

import numpy as np

from corrsteer.config import ARCHITECTURES, POOLS

logger = logging.getLogger(__name__)


def _preload_openblas() -> None:
    """Load the scipy-openblas32 shared library globally so ``_core`` finds it.

    setup.py also records an rpath to the wheel's lib dir; preloading covers wheels
    moved after the build. Missing wheel: ``_core`` was built without it.
    """
    try:
        import scipy_openblas32
    except ImportError:
        return
    path = os.path.join(scipy_openblas32.get_lib_dir(),
                        f"lib{scipy_openblas32.get_library()}.so")
    if os.path.exists(path):
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:  # pragma: no cover - broken wheel
            logger.debug("could not preload %s: %s", path, exc)


_preload_openblas()

# The compiled core, loaded after the preload on purpose. It is a leaf (it imports nothing from
# corrsteer), and by module path because import graphs see only .py files: `from corrsteer.core
# import _core` would read as an import of the package that imports this module.
_core = importlib.import_module("corrsteer.core._core")

# The C enums cs_arch and cs_pool_mode number the choices in config order.
ARCH_CODES = {name: i for i, name in enumerate(ARCHITECTURES)}
POOL_CODES = {name: i for i, name in enumerate(POOLS)}


def as_float32(name: str, a: Any, ndim: int | None = None) -> np.ndarray:
    """Return ``a`` as a float32 C-contiguous array (no copy if it already is one).

    Args:
        name: argument name used in error messages.
        a: array-like of real floating values.
        ndim: required number of dimensions, or None for any.

    Returns:
        float32 C-contiguous ndarray.

    Raises:
        TypeError: integer, bool, complex or object data.
        ValueError: wrong number of dimensions.
    """
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point values, got dtype {arr.dtype}; "
                        f"convert it with {name}.astype(np.float32)")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _mask_array(name: str, mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_ and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a bool array (True = use the row), got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape} but must have shape {shape}")
    return np.ascontiguousarray(arr != 0, dtype=np.uint8)


def _mode(mode: str) -> int:
    if mode not in POOL_CODES:
        raise ValueError(f"mode must be 'max' or 'mean', got {mode!r}")
    return POOL_CODES[mode]


def sae_args(sae: Any) -> tuple:
    """The argument tuple the binding takes for an SAE: its arrays and options."""
    arch = ARCH_CODES[sae.architecture]
    b_dec = sae.b_dec if sae.apply_b_dec_to_input else None
    threshold = sae.threshold if sae.architecture == "jumprelu" else None
    k = int(sae.k) if sae.architecture == "topk" else 0
    return (sae.W_enc, sae.b_enc, b_dec, threshold, arch, k, int(bool(sae.apply_b_dec_to_input)))


def _rows(sae: Any, name: str, x: Any) -> np.ndarray:
    arr = as_float32(name, x)
    if arr.ndim < 1 or arr.shape[-1] != sae.d_in:
        last = arr.shape[-1] if arr.ndim else None
        raise ValueError(f"{name} has d_in={last} (shape {arr.shape}) but the SAE expects "
                         f"{sae.d_in}; pass activations from the SAE's own site")
    return arr


def sae_encode(sae: Any, x: Any) -> np.ndarray:
    """Encode activations with an SAE.

    Args:
        sae: an SAE (see module docstring).
        x: (..., d_in) activations; finite.

    Returns:
        (..., d_sae) float32 feature activations.
    """
    arr = _rows(sae, "x", x)
    flat = arr.reshape(-1, sae.d_in)
    if flat.shape[0] == 0:
        raise ValueError(f"x is an empty batch (shape {arr.shape}); pass at least one row")
    f = _core.sae_encode(sae_args(sae), flat)
    return f.reshape(arr.shape[:-1] + (sae.d_sae,))


def sae_encode_pooled(sae: Any, x: Any, mask: Any = None, mode: str = "max") -> np.ndarray:
    """Encode whole sequences and pool over the masked tokens, fused and blocked.

    Args:
        sae: an SAE.
        x: (n_seq, n_tok, d_in) activations; finite.
        mask: (n_seq, n_tok) bool, True = pool this token; None = every token.
        mode: "max" (0 for a sequence with no token) or "mean" (0 when no token).

    Returns:
        (n_seq, d_sae) float32 pooled activations.
    """
    arr = _rows(sae, "x", x)
    if arr.ndim != 3:
        raise ValueError(f"x must have shape (n_seq, n_tok, d_in), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("x is an empty batch (n_seq=0); pass at least one sequence")
    m = None if mask is None else _mask_array("mask", mask, arr.shape[:2])
    return _core.sae_encode_pooled(sae_args(sae), arr, m, _mode(mode))


def seq_indices(seq: Any, n_rows: int, n_seq: int) -> np.ndarray:
    """Validate per-row sequence indices: (n_rows,) integers in [-1, n_seq), as int64."""
    arr = np.asarray(seq)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"seq must be an integer array of sequence indices, got dtype {arr.dtype}")
    if arr.shape != (n_rows,):
        raise ValueError(f"seq has shape {arr.shape} but x has {n_rows} rows; pass one index per row")
    # the range is checked in the array's own dtype: a uint64 2**64 - 1 must not wrap to -1 (skip)
    if arr.size and (arr.min() < -1 or arr.max() >= n_seq):
        raise ValueError(f"seq values must lie in [-1, {n_seq}) (-1 = skip the row), "
                         f"got range [{arr.min()}, {arr.max()}]")
    return np.ascontiguousarray(arr, dtype=np.int64)  # exact once in range


def sae_pool_rows(sae: Any, x: Any, seq: Any, n_seq: int,
                  mode: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """Encode rows tagged with their sequence index and pool them per sequence.

    Args:
        sae: an SAE.
        x: (n_rows, d_in) activations; finite.
        seq: (n_rows,) int sequence index per row, -1 = skip the row.
        n_seq: number of sequences (>= 1).
        mode: "max" or "mean".

    Returns:
        z: (n_seq, d_sae) float32 pooled activations (0 for a sequence with no row).
        counts: (n_seq,) int64 rows pooled per sequence.
    """
    arr = _rows(sae, "x", x)
    if arr.ndim != 2:
        raise ValueError(f"x must have shape (n_rows, d_in), got {arr.shape}")
    n_seq = _positive_int("n_seq", n_seq)
    if arr.shape[0] == 0:
        raise ValueError("x is an empty batch (0 rows); pass at least one row")
    s = seq_indices(seq, arr.shape[0], n_seq)
    return _core.sae_pool_rows(sae_args(sae), arr, s, n_seq, _mode(mode))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def steering_vector(W_dec: Any, features: Any, coefficients: Any) -> np.ndarray:
    """Sum of scaled decoder rows, accumulated in float64.

    Args:
        W_dec: (d_sae, d_in) decoder matrix.
        features: (n_feat,) int feature indices in [0, d_sae).
        coefficients: (n_feat,) finite real coefficients.

    Returns:
        (d_in,) float32 vector ``sum_k coefficients[k] * W_dec[features[k]]``.
    """
    W = as_float32("W_dec", W_dec, ndim=2)
    idx = np.asarray(features)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"features must be integer feature indices, got dtype {idx.dtype}")
    idx = np.ascontiguousarray(idx.reshape(-1), dtype=np.int64)
    coef = np.asarray(coefficients)
    if coef.dtype.kind not in "fiu":
        raise TypeError(f"coefficients must be real numbers, got dtype {coef.dtype}")
    coef = np.ascontiguousarray(coef.reshape(-1), dtype=np.float64)
    if idx.shape != coef.shape:
        raise ValueError(f"features has {idx.size} entries but coefficients has {coef.size}; "
                         "pass one coefficient per feature")
    if idx.size and (idx.min() < 0 or idx.max() >= W.shape[0]):
        raise ValueError(f"features must lie in [0, {W.shape[0]}) (d_sae of W_dec), "
                         f"got range [{idx.min()}, {idx.max()}]")
    if not np.isfinite(coef).all():
        raise ValueError("coefficients contain NaN or Inf; pass finite coefficients")
    return _core.steering_vector(W, idx, coef)


def add_to_rows(x: np.ndarray, v: Any, mask: Any = None) -> None:
    """Add ``v`` in place to the rows of ``x`` where ``mask`` is True.

    Args:
        x: (n_rows, d_in) float32 C-contiguous writable array, modified in place.
        v: (d_in,) vector.
        mask: (n_rows,) bool, or None for every row.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.flags.c_contiguous \
            or not x.flags.writeable:
        raise TypeError("x must be a writable float32 C-contiguous numpy array (it is "
                        "modified in place); use np.ascontiguousarray(x, dtype=np.float32)")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n_rows, d_in), got {x.shape}")
    vec = as_float32("v", v, ndim=1)
    if vec.shape[0] != x.shape[1]:
        raise ValueError(f"v has d_in={vec.shape[0]} but x has d_in={x.shape[1]}")
    m = None if mask is None else _mask_array("mask", mask, (x.shape[0],))
    _core.add_rows(x, vec, m)


def build_info() -> dict:
    """Which BLAS the core was built with, and how it is configured.

    Returns:
        dict with keys blas ("scipy-openblas" | "system" | "none"), version (the
        BLAS config string), threads (BLAS threads now), compiler, flags, core_version.
    """
    return dict(_core.build_info())


def get_num_threads() -> int:
    """Threads the BLAS uses for the GEMMs (1 for the naive fallback)."""
    return int(_core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Set the BLAS thread count (used by benchmarks). No-op for the naive fallback."""
    _core.set_num_threads(_positive_int("n", n))
