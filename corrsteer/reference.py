"""Pure-NumPy twin of every C kernel: the specification of corrsteer's core, in code.

Each function here computes what the C core computes, written for the reader rather
than for speed, with the signature of its ``corrsteer.kernels`` counterpart:
``sae_encode(sae, x)``, ``sae_encode_pooled(sae, x, mask=None, mode="max")``,
``sae_pool_rows(sae, x, seq, n_seq, mode="max")``, ``steering_vector(W_dec, features,
coefficients)``, ``add_to_rows(x, v, mask=None)``; ``Pooler`` and
``CorrelationAccumulator`` have the API of ``corrsteer.Pooler`` and
``corrsteer.CorrelationAccumulator``. The tests compare twin and kernel over grids of
shapes, architectures and seeds. Semantics follow ``docs/METHOD.md`` §1, §3 and §4:

- SAE encode: ``pre = (x - b_dec·[apply_b_dec_to_input]) @ W_enc + b_enc``, then
  JumpReLU ``pre · 1[pre > threshold]``, ReLU ``max(pre, 0)``, or TopK (the ``k``
  largest entries of ``pre``, ties to the lower index, ReLU'd; the rest zero).
- Pooling over tokens: ``max`` (0 where a sequence has no token) or ``mean`` (sum /
  count, 0 where the count is 0).
- Streaming point-biserial correlation with float64 centred moments (Chan's parallel
  update), ``r = 0`` where ``sd = 0`` and everywhere when ``n_pos ∈ {0, n}``.

Numerical choices: every reduction runs in float64 from float32 inputs and results are
cast back to float32 where the C core returns float32, so the twin is at least as exact
as the kernel it checks. Nothing here imports torch.

Example:
    >>> import numpy as np
    >>> from corrsteer import reference
    >>> acc = reference.CorrelationAccumulator(2)
    >>> acc.update(np.array([[1, 0], [0, 1]], np.float32), np.array([1, 0]))
    >>> acc.correlation().tolist()
    [1.0, -1.0]
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

ARCHITECTURES = ("jumprelu", "relu", "topk")
POOL_MODES = ("max", "mean")
KINDS = ("binary", "pearson")
CONST_RTOL = 1e-20
TOP_DTYPE = np.dtype([("index", np.int64), ("r", np.float64), ("coefficient", np.float64)])


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
    if mode not in POOL_MODES:
        raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
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
        buffer_rows: accepted for API parity with ``corrsteer.Pooler``; the twin
            encodes every push at once, so it does not buffer.
    """

    def __init__(self, sae: Any, n_seq: int, mode: str = "max", buffer_rows: int = 256) -> None:
        self.sae = sae_arrays(sae)
        if int(n_seq) < 1:
            raise ValueError(f"n_seq must be >= 1, got {n_seq}")
        if mode not in POOL_MODES:
            raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
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


_MAGIC = b"CSREFACC"
_VERSION = 1
_HEADER = struct.Struct("<8sIIq")  # magic, version, kind index, d_sae


class CorrelationAccumulator:
    """Streaming per-feature correlation between pooled activations z and rewards y.

    State (float64, METHOD.md §4): ``n``, ``n_pos`` (= Σy), ``mean``, ``m2``,
    ``mean_pos`` (= Σyz / Σy, the mean over positives for binary y); per feature also
    ``n_active`` (samples with z > 0, for the frequency) and ``pos_active``
    (Σ y·1[z > 0], for the active-only coefficient). The Pearson kind reads
    ``mean_y``, ``m2_y`` and ``c_zy`` (the centred co-moment Σ(z - mean)(y - mean_y)),
    which every kind keeps. The binary r uses METHOD.md's point-biserial formula, the
    Pearson r ``c_zy / sqrt(m2 · m2_y)``: equal for binary y, which the tests check.

    Args:
        d_sae: number of features.
        kind: ``"binary"`` (y in {0, 1}) or ``"pearson"`` (real y in [0, 1]).
    """

    _FIELDS = ("mean", "m2", "mean_pos", "n_active", "pos_active", "c_zy")
    _SCALARS = ("n", "n_pos", "mean_y", "m2_y")

    def __init__(self, d_sae: int, kind: str = "binary") -> None:
        if isinstance(d_sae, bool) or not isinstance(d_sae, (int, np.integer)) or d_sae < 1:
            raise ValueError(f"d_sae must be a positive integer, got {d_sae!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.d_sae, self.kind = int(d_sae), kind
        self.reset()

    def reset(self) -> None:
        """Return to the empty state."""
        for name in self._FIELDS:
            setattr(self, name, np.zeros(self.d_sae))
        for name in self._SCALARS:
            setattr(self, name, 0.0)

    @property
    def n_positive(self) -> int | float:
        """Σy: the number of samples with y = 1 (binary, an int) or the reward mass (pearson)."""
        return int(self.n_pos) if self.kind == "binary" else float(self.n_pos)

    def _check_batch(self, z: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        z64 = _float_array("z", z, 2)
        if z64.shape[1] != self.d_sae:
            raise ValueError(f"z has d_sae={z64.shape[1]} but the accumulator has d_sae={self.d_sae}")
        if z64.shape[0] == 0:
            raise ValueError("z is an empty batch (0 rows); pass at least one sample")
        if not np.all(np.isfinite(z64)):
            raise ValueError("z contains NaN or Inf; check the activations fed to update()")
        y_arr = np.asarray(y)
        if y_arr.dtype.kind not in "biuf":
            raise TypeError(f"y must be a numeric array, got dtype {y_arr.dtype}")
        y64 = y_arr.astype(np.float64)
        if y64.shape != (z64.shape[0],):
            raise ValueError(f"y must have shape ({z64.shape[0]},) to match z, got {y64.shape}")
        if not np.all(np.isfinite(y64)):
            raise ValueError("y contains NaN or Inf; rewards must be finite")
        if self.kind == "binary" and not np.all((y64 == 0) | (y64 == 1)):
            raise ValueError("y must be 0 or 1 for kind='binary'; use kind='pearson' for real rewards")
        if self.kind == "pearson" and not np.all((y64 >= 0) & (y64 <= 1)):
            raise ValueError("y must lie in [0, 1] for kind='pearson'")
        return z64, y64

    def update(self, z: np.ndarray, y: np.ndarray) -> None:
        """Fold in a batch: ``z`` (n, d_sae) pooled activations, ``y`` (n,) rewards."""
        z64, y64 = self._check_batch(z, y)
        self._merge_state(self._batch_state(z64, y64))

    def _batch_state(self, z: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """Two-pass moments of one batch, in the accumulator's own state layout."""
        mean, mean_y, sum_y = z.mean(axis=0), y.mean(), y.sum()
        active = z > 0
        return {
            "n": float(z.shape[0]), "n_pos": sum_y,
            "mean": mean, "m2": ((z - mean) ** 2).sum(axis=0),
            "mean_pos": (y[:, None] * z).sum(axis=0) / sum_y if sum_y > 0 else np.zeros(self.d_sae),
            "n_active": active.sum(axis=0).astype(np.float64),
            "pos_active": (y[:, None] * active).sum(axis=0),
            "mean_y": mean_y, "m2_y": ((y - mean_y) ** 2).sum(),
            "c_zy": ((z - mean) * (y - mean_y)[:, None]).sum(axis=0),
        }

    def _merge_state(self, b: dict[str, Any]) -> None:
        """Chan et al.'s parallel update: fold state ``b`` into ``self``."""
        n_a, n_b = self.n, b["n"]
        n = n_a + n_b
        if n_b == 0:
            return
        delta = b["mean"] - self.mean
        delta_y = b["mean_y"] - self.mean_y
        self.m2 = self.m2 + b["m2"] + delta**2 * (n_a * n_b / n)
        self.c_zy = self.c_zy + b["c_zy"] + delta * delta_y * (n_a * n_b / n)
        self.m2_y = self.m2_y + b["m2_y"] + delta_y**2 * (n_a * n_b / n)
        self.mean = self.mean + delta * (n_b / n)
        self.mean_y = self.mean_y + delta_y * (n_b / n)
        n_pos = self.n_pos + b["n_pos"]
        if n_pos > 0:
            self.mean_pos = self.mean_pos + (b["mean_pos"] - self.mean_pos) * (b["n_pos"] / n_pos)
        self.n_active = self.n_active + b["n_active"]
        self.pos_active = self.pos_active + b["pos_active"]
        self.n, self.n_pos = n, n_pos

    def merge(self, other: CorrelationAccumulator) -> None:
        """Fold ``other`` (same d_sae and kind) into this accumulator; ``other`` is unchanged."""
        if not isinstance(other, CorrelationAccumulator):
            raise TypeError(f"other must be a CorrelationAccumulator, got {type(other).__name__}")
        if other.d_sae != self.d_sae or other.kind != self.kind:
            raise ValueError(f"cannot merge d_sae={other.d_sae} kind={other.kind} into "
                             f"d_sae={self.d_sae} kind={self.kind}")
        self._merge_state({name: getattr(other, name) for name in self._FIELDS + self._SCALARS})

    def _degenerate(self) -> bool:
        if self.kind == "binary":
            bad = self.n_pos == 0 or self.n_pos == self.n
        else:
            # A constant non-dyadic y (say 0.3) leaves rounding noise in m2_y: below a
            # relative spread of 1e-10 the rewards are treated as constant.
            bad = self.n == 0 or self.m2_y <= self.n * (1e-10 * self.mean_y) ** 2
        if bad:
            warnings.warn(f"correlation undefined: n={int(self.n)}, n_positive={int(self.n_pos)} "
                          "(rewards are constant); every r is 0", UserWarning, stacklevel=3)
        return bad

    def correlation(self) -> np.ndarray:
        """Per-feature r (d_sae,) float64: point-biserial (binary) or Pearson (pearson)."""
        r = np.zeros(self.d_sae)
        if self._degenerate():
            return r
        # A feature is constant when m2 <= 1e-20 · n · mean² (sd / |mean| below 1e-10):
        # float32 inputs cannot vary that little, so only rounding noise is cut.
        ok = self.m2 > CONST_RTOL * self.n * self.mean**2
        if self.kind == "binary":
            n, n_pos = self.n, self.n_pos
            p = n_pos / n
            sd = np.sqrt(self.m2 / n)
            mean_neg = (n * self.mean - n_pos * self.mean_pos) / (n - n_pos)
            r[ok] = (self.mean_pos[ok] - mean_neg[ok]) / sd[ok] * np.sqrt(p * (1 - p))
        else:
            r[ok] = self.c_zy[ok] / np.sqrt(self.m2[ok] * self.m2_y)
        return r

    def coefficient(self, active_only: bool = False) -> np.ndarray:
        """Steering coefficient (d_sae,) float64: mean z over positives (Σyz / Σy for pearson).

        With ``active_only`` the positive sum is divided by the positive weight of the
        samples with z > 0 instead (0 where no positive sample is active).
        """
        if not active_only:
            return self.mean_pos.copy() if self.n_pos > 0 else np.zeros(self.d_sae)
        c = np.zeros(self.d_sae)
        np.divide(self.n_pos * self.mean_pos, self.pos_active, out=c, where=self.pos_active > 0)
        return c

    def frequency(self) -> np.ndarray:
        """Fraction of samples with z > 0, (d_sae,) float64 (0 when empty)."""
        return self.n_active / self.n if self.n > 0 else np.zeros(self.d_sae)

    def top(self, k: int, sign: str = "positive", active_only: bool = False) -> np.ndarray:
        """The ``k`` features with the largest r > 0 (or smallest r < 0), ties to the lower index.

        Returns:
            Structured array (≤ k rows) with fields ``index`` int64, ``r``, ``coefficient``.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.d_sae:
            raise ValueError(f"k must be an integer in [1, d_sae={self.d_sae}], got {k!r}")
        if sign not in ("positive", "negative"):
            raise ValueError(f"sign must be 'positive' or 'negative', got {sign!r}")
        r = self.correlation()
        order = np.argsort(-r if sign == "positive" else r, kind="stable")
        order = order[(r[order] > 0) if sign == "positive" else (r[order] < 0)][:k]
        out = np.zeros(len(order), dtype=TOP_DTYPE)
        out["index"], out["r"], out["coefficient"] = order, r[order], self.coefficient(active_only)[order]
        return out

    def to_bytes(self) -> bytes:
        """Versioned serialisation: header, float64 state, CRC32 of everything before it."""
        body = _HEADER.pack(_MAGIC, _VERSION, KINDS.index(self.kind), self.d_sae)
        body += np.array([getattr(self, s) for s in self._SCALARS], dtype="<f8").tobytes()
        body += b"".join(getattr(self, f).astype("<f8").tobytes() for f in self._FIELDS)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> CorrelationAccumulator:
        """Rebuild an accumulator from :meth:`to_bytes` output; ValueError if corrupt."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size + 4:
            raise ValueError(f"data is truncated ({len(data)} bytes); not an accumulator checkpoint")
        magic, version, kind, d_sae = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError("data is not a reference accumulator checkpoint (bad magic)")
        if version != _VERSION:
            raise ValueError(f"data has format version {version}; this reads version {_VERSION}")
        n_scalars, n_fields = len(cls._SCALARS), len(cls._FIELDS)
        size = _HEADER.size + 8 * (n_scalars + n_fields * d_sae) + 4
        if kind >= len(KINDS) or d_sae < 1 or len(data) != size:
            raise ValueError(f"data is truncated or corrupt ({len(data)} bytes, expected {size})")
        if struct.unpack("<I", data[-4:])[0] != zlib.crc32(data[:-4]):
            raise ValueError("data fails its checksum; the checkpoint is corrupt")
        acc = cls(d_sae, KINDS[kind])
        values = np.frombuffer(data, dtype="<f8", offset=_HEADER.size, count=(size - _HEADER.size - 4) // 8)
        for i, name in enumerate(cls._SCALARS):
            setattr(acc, name, float(values[i]))
        for i, name in enumerate(cls._FIELDS):
            start = n_scalars + i * d_sae
            setattr(acc, name, values[start:start + d_sae].astype(np.float64))
        return acc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_bytes` to ``path`` atomically (temp file + rename)."""
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".acc-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.to_bytes())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CorrelationAccumulator:
        """Read an accumulator written by :meth:`save`."""
        with open(path, "rb") as fh:
            return cls.from_bytes(fh.read())

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (type(self).from_bytes, (self.to_bytes(),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CorrelationAccumulator) and self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]


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
