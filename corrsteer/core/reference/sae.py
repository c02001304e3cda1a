"""NumPy twin of the SAE kernels: encode, pool over tokens, the streaming pooler, steering deltas.

The specification of ``corrsteer.core.kernels`` and ``corrsteer.core.Pooler`` in code
(METHOD.md §1, §3, §5): every reduction runs in float64 from float32 inputs, results are
cast back to float32 where the C core returns float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from corrsteer.config import ARCHITECTURES, POOLS


def _float_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """Return ``value`` as a float64 array of ``ndim`` dims, rejecting non-float dtypes."""
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}; "
                        f"convert it with {name}.astype(np.float32)")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    return arr.astype(np.float64)


def _mask_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A bool mask of ``shape`` from bool or integer data (nonzero = True)."""
    arr = np.asarray(value)
    if arr.dtype != np.bool_ and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a bool array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return arr != 0


@dataclass(frozen=True)
class SAEArrays:
    """The parts of an SAE the kernels read, as float64 arrays (METHOD.md §1)."""

    W_enc: np.ndarray              # (d_in, d_sae)
    b_enc: np.ndarray              # (d_sae,)
    b_dec: np.ndarray              # (d_in,)
    threshold: np.ndarray | None   # (d_sae,), >= 0; jumprelu only
    architecture: str              # "jumprelu" | "relu" | "topk"
    k: int | None                  # topk only, 1 <= k <= d_sae
    apply_b_dec_to_input: bool     # subtract b_dec from x before the encoder

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]


def sae_arrays(sae: Any) -> SAEArrays:
    """Read and check the SAE fields from a ``corrsteer.SAE``-like object or a dict.

    Args:
        sae: anything with ``W_enc b_enc b_dec threshold architecture k
            apply_b_dec_to_input`` (attributes or keys; the last three are optional).

    Returns:
        SAEArrays with float64 copies of the weights.
    """
    if isinstance(sae, SAEArrays):
        return sae
    get = sae.get if isinstance(sae, dict) else (lambda key, default=None: getattr(sae, key, default))
    W_enc = _float_array("W_enc", get("W_enc"), 2)
    d_in, d_sae = W_enc.shape
    b_enc = _float_array("b_enc", get("b_enc"), 1)
    b_dec = _float_array("b_dec", get("b_dec"), 1)
    if b_enc.shape != (d_sae,) or b_dec.shape != (d_in,):
        raise ValueError(f"b_enc {b_enc.shape} and b_dec {b_dec.shape} must be ({d_sae},) and ({d_in},)")
    architecture = get("architecture", "jumprelu")
    threshold, k = None, None
    if architecture == "jumprelu":
        if get("threshold") is None:
            raise ValueError("threshold is required for architecture='jumprelu'")
        threshold = _float_array("threshold", get("threshold"), 1)
        if threshold.shape != (d_sae,) or not np.all(np.isfinite(threshold) & (threshold >= 0)):
            raise ValueError(f"threshold must have shape ({d_sae},), be finite and >= 0")
    elif architecture == "topk":
        k = get("k")
        if k is None or not 1 <= int(k) <= d_sae:
            raise ValueError(f"k must be in [1, d_sae={d_sae}] for architecture='topk', got {k}")
        k = int(k)
    elif architecture != "relu":
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    return SAEArrays(W_enc, b_enc, b_dec, threshold, architecture, k,
                     bool(get("apply_b_dec_to_input", False)))


def _rows(sae: SAEArrays, name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[-1] != sae.d_in:
        raise ValueError(f"{name} has shape {arr.shape} but the SAE expects d_in={sae.d_in}")
    return arr.astype(np.float64)


def preactivation(sae: Any, x: np.ndarray) -> np.ndarray:
    """Encoder pre-activations ``(x - b_dec·[apply]) @ W_enc + b_enc``, (n_rows, d_sae) float64."""
    sae = sae_arrays(sae)
    x64 = _rows(sae, "x", x).reshape(-1, sae.d_in)
    if sae.apply_b_dec_to_input:
        x64 = x64 - sae.b_dec
    return x64 @ sae.W_enc + sae.b_enc


def activate(sae: Any, pre: np.ndarray) -> np.ndarray:
    """Apply the SAE nonlinearity to pre-activations ``pre`` (n_rows, d_sae), in float64."""
    sae = sae_arrays(sae)
    if sae.architecture == "jumprelu":
        return pre * (pre > sae.threshold)
    if sae.architecture == "relu":
        return np.maximum(pre, 0.0)
    # TopK: a stable sort of -pre puts equal values in index order, so ties go to the lower index.
    keep = np.argsort(-pre, axis=1, kind="stable")[:, : sae.k]
    rows = np.arange(pre.shape[0])[:, None]
    f = np.zeros_like(pre)
    f[rows, keep] = np.maximum(pre[rows, keep], 0.0)
    return f


def sae_encode(sae: Any, x: np.ndarray) -> np.ndarray:
    """SAE feature activations.

    Args:
        sae: an SAE (see :func:`sae_arrays`). x: (..., d_in) float.

    Returns:
        f: (..., d_sae) float32.
    """
    sae = sae_arrays(sae)
    arr = _rows(sae, "x", x)
    f = activate(sae, preactivation(sae, arr))
    return f.reshape(arr.shape[:-1] + (sae.d_sae,)).astype(np.float32)


def sae_decode(sae: Any, f: np.ndarray) -> np.ndarray:
    """Decode ``f`` (..., d_sae) to ``f @ W_dec + b_dec`` (..., d_in) float32 (needs ``W_dec``)."""
    get = sae.get if isinstance(sae, dict) else (lambda key: getattr(sae, key))
    W_dec, b_dec = _float_array("W_dec", get("W_dec"), 2), _float_array("b_dec", get("b_dec"), 1)
    f64 = np.asarray(f, dtype=np.float64)
    return (f64 @ W_dec + b_dec).astype(np.float32)


def pool(f: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool activations over tokens.

    Args:
        f: (n_seq, n_tok, d_sae) activations. mask: (n_seq, n_tok) bool, True = counted.
        mode: ``"max"`` (0 where no token) or ``"mean"`` (sum / count, 0 where count 0).

    Returns:
        z: (n_seq, d_sae) float32.
    """
    if mode not in POOLS:
        raise ValueError(f"mode must be one of {POOLS}, got {mode!r}")
    n_seq, _, d_sae = f.shape
    z = np.zeros((n_seq, d_sae), dtype=np.float64)
    for i in range(n_seq):
        rows = np.asarray(f[i][mask[i]], dtype=np.float64)
        if rows.shape[0] == 0:
            continue
        z[i] = rows.max(axis=0) if mode == "max" else rows.sum(axis=0) / rows.shape[0]
    return z.astype(np.float32)


def sae_encode_pooled(sae: Any, x: np.ndarray, mask: np.ndarray | None = None,
                      mode: str = "max") -> np.ndarray:
    """Encode whole sequences and pool over the masked tokens (unfused, for clarity).

    Args:
        sae: an SAE. x: (n_seq, n_tok, d_in) float.
        mask: (n_seq, n_tok) bool, True = pool the token; None = every token.
        mode: ``"max" | "mean"``.

    Returns:
        z: (n_seq, d_sae) float32.
    """
    sae = sae_arrays(sae)
    x64 = _rows(sae, "x", x)
    if x64.ndim != 3 or x64.shape[0] == 0:
        raise ValueError(f"x must have shape (n_seq >= 1, n_tok, d_in), got {x64.shape}")
    n_seq, n_tok, _ = x64.shape
    mask = np.ones((n_seq, n_tok), bool) if mask is None else _mask_array("mask", mask, (n_seq, n_tok))
    f = activate(sae, preactivation(sae, x64)).reshape(n_seq, n_tok, sae.d_sae)
    return pool(f, mask, mode)


def sae_pool_rows(sae: Any, x: np.ndarray, seq: np.ndarray, n_seq: int,
                  mode: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """Encode rows tagged with their sequence index and pool them per sequence.

    Args:
        sae: an SAE. x: (n_rows, d_in) float. seq: (n_rows,) int in [-1, n_seq), -1 = skip.
        n_seq: number of sequences. mode: ``"max" | "mean"``.

    Returns:
        z: (n_seq, d_sae) float32 (0 for a sequence with no row); counts: (n_seq,) int64.
    """
    sae = sae_arrays(sae)
    x64 = _rows(sae, "x", x)
    if x64.ndim != 2:
        raise ValueError(f"x must have shape (n_rows, d_in), got {x64.shape}")
    seq = np.asarray(seq)
    if seq.dtype.kind not in "iu":
        raise TypeError(f"seq must be an integer array, got dtype {seq.dtype}")
    if seq.shape != (x64.shape[0],) or np.any((seq < -1) | (seq >= n_seq)):
        raise ValueError(f"seq must have shape ({x64.shape[0]},) and values in [-1, {n_seq})")
    f = activate(sae, preactivation(sae, x64))
    # Scatter the rows into a (n_seq, n_tok_max) grid with a mask, then reuse pool().
    counts = np.array([(seq == s).sum() for s in range(n_seq)], dtype=np.int64)
    grid = np.zeros((n_seq, max(int(counts.max(initial=0)), 1), sae.d_sae))
    mask = np.zeros(grid.shape[:2], dtype=bool)
    for s in range(n_seq):
        rows = f[seq == s]
        grid[s, : len(rows)] = rows
        mask[s, : len(rows)] = True
    return pool(grid, mask, mode), counts


class Pooler:
    """Streaming pooled state over generation: a running max, or a running sum and count.

    Args:
        sae: an SAE (a ``corrsteer.SAE``, or a dict of its arrays; see :func:`sae_arrays`).
        n_seq: number of sequences pooled.
        mode: ``"max" | "mean"``.
        buffer_rows: accepted for API parity with ``corrsteer.core.Pooler``; the twin
            encodes every push at once, so it does not buffer.
    """

    def __init__(self, sae: Any, n_seq: int, mode: str = "max", buffer_rows: int = 256) -> None:
        self.sae = sae_arrays(sae)
        if int(n_seq) < 1:
            raise ValueError(f"n_seq must be >= 1, got {n_seq}")
        if mode not in POOLS:
            raise ValueError(f"mode must be one of {POOLS}, got {mode!r}")
        if int(buffer_rows) < 1:
            raise ValueError(f"buffer_rows must be >= 1, got {buffer_rows}")
        self.n_seq, self.mode, self.buffer_rows = int(n_seq), mode, int(buffer_rows)
        self.d_in, self.d_sae = self.sae.d_in, self.sae.d_sae
        self.reset()

    def reset(self) -> None:
        """Forget every row pushed so far."""
        self._max = np.full((self.n_seq, self.d_sae), -np.inf)
        self._sum = np.zeros((self.n_seq, self.d_sae))
        self._counts = np.zeros(self.n_seq, dtype=np.int64)

    @property
    def counts(self) -> np.ndarray:
        """(n_seq,) int64: rows folded in per sequence."""
        return self._counts.copy()

    def push(self, x: np.ndarray, active: np.ndarray) -> None:
        """One generation step: ``x`` (n_seq, d_in); row i counts iff ``active[i]``."""
        x64 = _rows(self.sae, "x", x)
        if x64.shape != (self.n_seq, self.d_in):
            raise ValueError(f"x must have shape ({self.n_seq}, {self.d_in}), got {x64.shape}")
        active = _mask_array("active", active, (self.n_seq,))
        self.push_rows(x64, np.where(active, np.arange(self.n_seq), -1))

    def push_rows(self, x: np.ndarray, seq: np.ndarray) -> None:
        """Fold rows ``x`` (n_rows, d_in) into sequences ``seq`` (n_rows,) int; -1 = skip."""
        x64 = _rows(self.sae, "x", x)
        seq = np.asarray(seq)
        if seq.dtype.kind not in "iu":
            raise TypeError(f"seq must be an integer array, got dtype {seq.dtype}")
        if x64.ndim != 2 or seq.shape != (x64.shape[0],):
            raise ValueError(f"x {x64.shape} and seq {seq.shape} must be (n_rows, d_in) and (n_rows,)")
        if np.any((seq < -1) | (seq >= self.n_seq)):
            raise ValueError(f"seq values must be in [-1, n_seq={self.n_seq}), got {seq}")
        f = activate(self.sae, preactivation(self.sae, x64))
        for row, s in enumerate(seq):
            if s < 0:
                continue
            self._max[s] = np.maximum(self._max[s], f[row])
            self._sum[s] += f[row]
            self._counts[s] += 1

    def result(self) -> np.ndarray:
        """Pooled state (n_seq, d_sae) float32: max (0 where no row) or sum/count (0 where none)."""
        seen = self._counts > 0
        z = np.zeros((self.n_seq, self.d_sae))
        if self.mode == "max":
            z[seen] = self._max[seen]
        else:
            z[seen] = self._sum[seen] / self._counts[seen, None]
        return z.astype(np.float32)


def steering_vector(W_dec: np.ndarray, features: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """``Σ_k coefficients[k] · W_dec[features[k]]``.

    Args:
        W_dec: (d_sae, d_in). features: (n_feat,) int in [0, d_sae). coefficients: (n_feat,).

    Returns:
        v: (d_in,) float32 (zeros when n_feat = 0).
    """
    W = _float_array("W_dec", W_dec, 2)
    feats = np.asarray(features)
    if feats.dtype.kind not in "iu":
        raise TypeError(f"features must be an integer array, got dtype {feats.dtype}")
    coefs = np.asarray(coefficients, dtype=np.float64)
    if feats.ndim != 1 or coefs.shape != feats.shape:
        raise ValueError(f"features {feats.shape} and coefficients {coefs.shape} must be "
                         "1-D of the same length")
    if np.any((feats < 0) | (feats >= W.shape[0])):
        raise ValueError(f"features must be in [0, d_sae={W.shape[0]}), got {feats}")
    v = np.zeros(W.shape[1])
    for f, c in zip(feats, coefs):
        v += c * W[f]
    return v.astype(np.float32)


def add_to_rows(x: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None) -> None:
    """In place: ``x[i] += v`` for every row i with ``mask[i]`` (every row when None).

    Args:
        x: (n_rows, d_in) float array, modified in place. v: (d_in,). mask: (n_rows,) bool.
    """
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim != 2:
        raise TypeError("x must be a 2-D float numpy array (it is modified in place)")
    vec = np.asarray(v)
    if vec.shape != (x.shape[1],):
        raise ValueError(f"v must have shape ({x.shape[1]},), got {vec.shape}")
    rows = np.ones(x.shape[0], bool) if mask is None else _mask_array("mask", mask, (x.shape[0],))
    for i in np.flatnonzero(rows):
        x[i] += vec.astype(x.dtype)
