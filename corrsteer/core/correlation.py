"""Streaming point-biserial (or Pearson) correlation per SAE feature (docs/METHOD.md §4).

Each sample gives pooled activations ``z`` (d_sae,) and a reward ``y``. The C core
keeps float64 centred moments per feature (``mean``, ``m2``, ``mean_pos``, the
co-moment with ``y``, and active counts), folds batches in with Chan et al.'s
parallel update, and merges two accumulators exactly with the same formula. Memory
is O(d_sae), whatever the number of samples.

Example:
    >>> import numpy as np, corrsteer
    >>> acc = corrsteer.core.CorrelationAccumulator(2)
    >>> acc.update(np.array([[1, 0], [0, 1], [1, 1]], np.float32), np.array([1, 0, 1]))
    >>> acc.correlation().round(3).tolist()
    [1.0, -0.5]
    >>> acc.top(1)["index"].tolist()
    [0]
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from corrsteer.config import KINDS, SIGNS
from corrsteer.core import kernels
from corrsteer.core.kernels import _core
from corrsteer.storage import atomic

TOP_DTYPE = np.dtype([("index", np.int64), ("r", np.float64), ("coefficient", np.float64)])
FormatError = _core.FormatError  # bad checkpoint bytes; a CorrsteerError and a ValueError


class DegenerateRewardsWarning(UserWarning):
    """Every reward is equal (n_pos = 0 or n_pos = n): correlations are undefined, all r = 0."""


class CorrelationAccumulator:
    """Per-feature correlation between pooled activations and rewards, streamed.

    Args:
        d_sae: number of features (>= 1).
        kind: "binary" (y in {0, 1}, point-biserial) or "pearson" (real y in [0, 1]).

    An accumulator used from two threads at once refuses the second call with
    RuntimeError; give each thread its own and :meth:`merge` them.
    """

    def __init__(self, d_sae: int, kind: str = "binary") -> None:
        if isinstance(d_sae, (bool, np.bool_)) or not isinstance(d_sae, (int, np.integer)):
            raise TypeError(f"d_sae must be an int, got {type(d_sae).__name__}")
        if d_sae < 1:
            raise ValueError(f"d_sae must be >= 1, got {d_sae}")
        if kind not in KINDS:
            raise ValueError(f"kind must be 'binary' or 'pearson', got {kind!r}")
        self._acc = _core.Accumulator(int(d_sae), KINDS.index(kind))

    @classmethod
    def _wrap(cls, acc: Any) -> CorrelationAccumulator:
        self = cls.__new__(cls)
        self._acc = acc
        return self

    # ------------------------------------------------------------ state
    @property
    def d_sae(self) -> int:
        """Number of features."""
        return int(self._acc.d_sae)

    @property
    def kind(self) -> str:
        """"binary" or "pearson"."""
        return KINDS[self._acc.kind]

    @property
    def n(self) -> int:
        """Samples folded in."""
        return int(self._acc.n)

    @property
    def n_positive(self) -> int | float:
        """Σy: positive samples (binary, an int) or the reward mass (pearson, a float)."""
        n_pos = self._acc.n_pos
        return int(n_pos) if self.kind == "binary" else float(n_pos)

    @property
    def nbytes(self) -> int:
        """Bytes of state held by the C core (independent of the number of samples)."""
        return int(self._acc.nbytes)

    def __repr__(self) -> str:
        return (f"CorrelationAccumulator(d_sae={self.d_sae}, kind={self.kind!r}, n={self.n}, "
                f"n_positive={self.n_positive})")

    # ----------------------------------------------------------- update
    def _rewards(self, y: Any, n: int) -> np.ndarray:
        arr = np.asarray(y)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"y must be a numeric array of rewards, got dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ValueError(f"y has shape {arr.shape} but z has {n} rows; pass one reward per row")
        y64 = np.ascontiguousarray(arr, dtype=np.float64)
        if not np.isfinite(y64).all():
            raise ValueError("y contains NaN or Inf; rewards must be finite")
        if self.kind == "binary" and not ((y64 == 0) | (y64 == 1)).all():
            raise ValueError("y must be 0 or 1 for kind='binary'; use kind='pearson' for "
                             "real-valued rewards in [0, 1]")
        if self.kind == "pearson" and not ((y64 >= 0) & (y64 <= 1)).all():
            raise ValueError("y must lie in [0, 1] for kind='pearson'; rescale the rewards")
        return y64

    def update(self, z: Any, y: Any) -> None:
        """Fold in a batch (state unchanged if anything is rejected).

        Args:
            z: (n, d_sae) pooled activations; finite. Converted to float32.
            y: (n,) rewards: 0/1 (binary) or in [0, 1] (pearson).
        """
        arr = kernels.as_float32("z", z)
        if arr.ndim != 2:
            raise ValueError(f"z must be 2-D (n, d_sae), got shape {arr.shape}")
        if arr.shape[1] != self.d_sae:
            raise ValueError(f"z has d_sae={arr.shape[1]} but the accumulator has d_sae={self.d_sae}")
        if arr.shape[0] == 0:
            raise ValueError("z is an empty batch (0 rows); pass at least one sample")
        self._acc.update(arr, self._rewards(y, arr.shape[0]))

    def merge(self, other: CorrelationAccumulator) -> None:
        """Fold ``other`` (same d_sae and kind) into this one; ``other`` is unchanged."""
        if not isinstance(other, CorrelationAccumulator):
            raise TypeError(f"other must be a CorrelationAccumulator, got {type(other).__name__}")
        if other.d_sae != self.d_sae:
            raise ValueError(f"cannot merge an accumulator with d_sae={other.d_sae} into one with "
                             f"d_sae={self.d_sae}")
        if other.kind != self.kind:
            raise ValueError(f"cannot merge kind={other.kind!r} into kind={self.kind!r}")
        self._acc.merge(other._acc)

    def reset(self) -> None:
        """Forget every sample."""
        self._acc.reset()

    # ---------------------------------------------------------- results
    def correlation(self) -> np.ndarray:
        """(d_sae,) float64 r per feature; 0 for constant features.

        Warns :class:`DegenerateRewardsWarning` (and returns all zeros) when every
        reward is equal, so that no correlation is defined.
        """
        r, degenerate = self._acc.correlation()
        if degenerate:
            warnings.warn(f"correlation undefined: n={self.n}, n_positive={self.n_positive} "
                          "(every reward is equal); every r is 0", DegenerateRewardsWarning,
                          stacklevel=2)
        return r

    def coefficient(self, active_only: bool = False) -> np.ndarray:
        """(d_sae,) float64 steering coefficient: Σ(y z) / Σy (the mean over positives).

        Args:
            active_only: divide by the positive weight of samples with z > 0 instead
                (0 where no positive sample activates the feature).
        """
        return self._acc.coefficient(bool(active_only))

    def frequency(self) -> np.ndarray:
        """(d_sae,) float64 fraction of samples with z > 0 (0 when empty)."""
        return self._acc.frequency()

    def moments(self) -> dict[str, Any]:
        """The raw state, copied out by the C core (``cs_corr_moments``).

        Returns:
            ``{"n", "n_pos", "mean_y", "m2_y"}`` (floats: samples, Σy, the mean and centred
            sum of squares of y) and per feature (d_sae,) float64 arrays ``mean`` (of z),
            ``m2`` (Σ (z - mean)²), ``mean_pos`` (Σ y z / Σ y), ``n_active`` (count of
            z > 0), ``n_pos_active`` (Σ y · 1[z > 0]) and ``c_zy`` (Σ (z - mean)(y - mean_y)).
            With binary rewards these give the 2×2 activity counts behind mutual
            information and the class means (``mean_neg = (n·mean − n_pos·mean_pos) / (n − n_pos)``).
        """
        return dict(self._acc.moments())

    def top(self, k: int, sign: str = "positive", active_only: bool = False) -> np.ndarray:
        """The k features with the largest r > 0 (or smallest r < 0), ties to the lower index.

        Args:
            k: rows wanted, 1 <= k <= d_sae; fewer come back if fewer features qualify.
            sign: "positive" or "negative".
            active_only: which coefficient to report (see :meth:`coefficient`).

        Returns:
            structured array (m <= k rows) with fields index (int64), r, coefficient (float64).
        """
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) \
                or not 1 <= k <= self.d_sae:
            raise ValueError(f"k must be an int in [1, d_sae={self.d_sae}], got {k!r}")
        if sign not in SIGNS:
            raise ValueError(f"sign must be 'positive' or 'negative', got {sign!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateRewardsWarning)
            index, r = self._acc.top(int(k), SIGNS.index(sign))
        out = np.zeros(len(index), dtype=TOP_DTYPE)
        out["index"], out["r"] = index, r
        out["coefficient"] = self.coefficient(active_only)[index]
        return out

    # ---------------------------------------------------- serialisation
    def to_bytes(self) -> bytes:
        """Versioned bytes: magic, version, kind, d_sae, counts, state, FNV-1a 64 checksum."""
        return self._acc.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> CorrelationAccumulator:
        """Rebuild from :meth:`to_bytes`; raises FormatError (a ValueError) if malformed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        return cls._wrap(_core.Accumulator.from_bytes(data))

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_bytes` atomically: temp file in the same dir, fsync, rename (:mod:`corrsteer.storage.atomic`)."""
        atomic.write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CorrelationAccumulator:
        """Read an accumulator written by :meth:`save`."""
        with open(path, "rb") as fh:
            return cls.from_bytes(fh.read())

    def copy(self) -> CorrelationAccumulator:
        """An independent copy."""
        return self.from_bytes(self.to_bytes())

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (type(self).from_bytes, (self.to_bytes(),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CorrelationAccumulator) and self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]
