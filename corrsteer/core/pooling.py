"""Streaming pooled SAE activations over generation (docs/METHOD.md §3).

A :class:`Pooler` keeps, for ``n_seq`` sequences, the running max (or sum and count)
of the SAE's feature activations. Each generation step pushes one residual row per
sequence with an "active" flag; rows are buffered and flushed through the C core's
fused encode + pool kernel ``buffer_rows`` at a time (one GEMM over all buffered rows
instead of one per step), which changes no result because max and sum are
associative. Memory is ``n_seq × d_sae`` plus the buffer, whatever the number of
generated tokens.

Example:
    >>> import numpy as np, corrsteer
    >>> eye = np.eye(2, dtype=np.float32)
    >>> sae = corrsteer.SAE(eye, np.zeros(2, np.float32), eye, np.zeros(2, np.float32),
    ...                     architecture="relu")
    >>> pooler = corrsteer.core.Pooler(sae, n_seq=2)
    >>> pooler.push(np.array([[1, 0], [0, 3]], np.float32), np.array([True, False]))
    >>> pooler.push(np.array([[2, 0], [0, 1]], np.float32), np.array([True, True]))
    >>> pooler.result()
    array([[2., 0.],
           [0., 1.]], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from corrsteer.core import kernels
from corrsteer.core.kernels import _core


def _positive(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class Pooler:
    """Running max / mean of SAE features per sequence, fed row by row.

    Args:
        sae: the :class:`corrsteer.SAE` to encode with (kept by reference; its
            arrays are passed to the core on every flush).
        n_seq: number of sequences (>= 1).
        mode: "max" (0 where a sequence has no row) or "mean" (0 where count is 0).
        buffer_rows: rows buffered before a flush (>= 1); 256 keeps the GEMM
            compute-bound.
    """

    def __init__(self, sae: Any, n_seq: int, mode: str = "max", buffer_rows: int = 256) -> None:
        self.n_seq = _positive("n_seq", n_seq)
        if mode not in kernels.POOL_CODES:
            raise ValueError(f"mode must be 'max' or 'mean', got {mode!r}")
        self.buffer_rows = _positive("buffer_rows", buffer_rows)
        self.sae = sae
        self.mode = mode
        self._core = _core.Pooler(kernels.sae_args(sae), self.n_seq, kernels.POOL_CODES[mode],
                                  self.buffer_rows)
        self._counts = np.zeros(self.n_seq, np.int64)
        self._arange = np.arange(self.n_seq, dtype=np.int64)

    def __repr__(self) -> str:
        return (f"Pooler(n_seq={self.n_seq}, mode={self.mode!r}, d_sae={self.sae.d_sae}, "
                f"buffer_rows={self.buffer_rows})")

    @property
    def counts(self) -> np.ndarray:
        """(n_seq,) int64: rows pooled per sequence so far (buffered rows included)."""
        return self._counts.copy()

    @property
    def nbytes(self) -> int:
        """Bytes held by the C state: pooled state + row buffer + tile workspace."""
        return int(self._core.nbytes)

    def _rows(self, x: Any) -> np.ndarray:
        arr = kernels.as_float32("x", x)
        if arr.ndim != 2 or arr.shape[1] != self.sae.d_in:
            raise ValueError(f"x has shape {arr.shape} but must be (n_rows, d_in={self.sae.d_in}); "
                             "check that x comes from the SAE's own site")
        return arr

    def push(self, x: Any, active: Any) -> None:
        """Fold one generation step: row i counts iff ``active[i]``.

        Args:
            x: (n_seq, d_in) residual activations, one row per sequence.
            active: (n_seq,) bool; False for sequences that stopped or are padding.
        """
        arr = self._rows(x)
        if arr.shape[0] != self.n_seq:
            raise ValueError(f"x has {arr.shape[0]} rows but the pooler has n_seq={self.n_seq}; "
                             "push one row per sequence")
        act = np.asarray(active)
        if act.dtype != np.bool_ and act.dtype.kind not in "iu":
            raise TypeError(f"active must be a bool array, got dtype {act.dtype}")
        if act.shape != (self.n_seq,):
            raise ValueError(f"active has shape {act.shape} but must be ({self.n_seq},)")
        seq = np.where(act != 0, self._arange, -1)
        self._core.push(kernels.sae_args(self.sae), arr, seq)
        self._counts += act != 0

    def push_rows(self, x: Any, seq: Any) -> None:
        """Fold rows tagged with their sequence index.

        Args:
            x: (n_rows, d_in) residual activations.
            seq: (n_rows,) int sequence index per row in [0, n_seq), -1 = skip the row.
        """
        arr = self._rows(x)
        s = kernels.seq_indices(seq, arr.shape[0], self.n_seq)
        self._core.push(kernels.sae_args(self.sae), arr, s)
        self._counts += np.bincount(s[s >= 0], minlength=self.n_seq)

    def flush(self) -> None:
        """Encode and fold the buffered rows now (result() does this itself)."""
        self._core.flush(kernels.sae_args(self.sae))

    def result(self) -> np.ndarray:
        """(n_seq, d_sae) float32 pooled activations (flushes first)."""
        z, _ = self._core.result(kernels.sae_args(self.sae))
        return z

    def reset(self) -> None:
        """Zero the state and drop buffered rows, keeping the allocation."""
        self._core.reset()
        self._counts[:] = 0
