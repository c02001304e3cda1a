"""NumPy twin of the streaming correlation accumulator (METHOD.md §4).

The specification of ``corrsteer.core.CorrelationAccumulator`` in code: float64 centred
moments merged with Chan et al.'s parallel update, written for the reader, with the same
``update / merge / correlation / coefficient / frequency / top / moments`` API. It has no
serialisation of its own: resuming is the C core's business (``to_bytes``), and the twin
only has to agree with it number for number.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from corrsteer.config import KINDS, SIGNS
from corrsteer.core.reference.sae import _float_array

CONST_RTOL = 1e-20
TOP_DTYPE = np.dtype([("index", np.int64), ("r", np.float64), ("coefficient", np.float64)])


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
        if sign not in SIGNS:
            raise ValueError(f"sign must be 'positive' or 'negative', got {sign!r}")
        r = self.correlation()
        order = np.argsort(-r if sign == "positive" else r, kind="stable")
        order = order[(r[order] > 0) if sign == "positive" else (r[order] < 0)][:k]
        out = np.zeros(len(order), dtype=TOP_DTYPE)
        out["index"], out["r"], out["coefficient"] = order, r[order], self.coefficient(active_only)[order]
        return out

    def moments(self) -> dict[str, Any]:
        """The raw state: ``n``, ``n_pos`` and per feature ``mean``, ``m2``, ``mean_pos``,
        ``n_active``, ``n_pos_active`` (copies), as ``CorrelationAccumulator.moments``."""
        return {"n": float(self.n), "n_pos": float(self.n_pos), "mean": self.mean.copy(), "m2": self.m2.copy(),
                "mean_pos": self.mean_pos.copy(), "n_active": self.n_active.copy(),
                "n_pos_active": self.pos_active.copy()}
