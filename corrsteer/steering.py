"""Steering vectors from SAE features (docs/METHOD.md §5).

``steering_vector(W_dec, features, coefficients) = Σ_k c_k · W_dec[f_k]``, accumulated
in float64 by the C core. An :class:`Intervention` pairs a layer with its vector (and
remembers which features made it); it unpacks as ``(layer, vector)``, the form the
hooks take.

Example:
    >>> import numpy as np, corrsteer
    >>> W_dec = np.eye(3, dtype=np.float32)
    >>> corrsteer.steering_vector(W_dec, [0, 2], [2.0, -1.0])
    array([ 2.,  0., -1.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corrsteer import kernels


def steering_vector(W_dec: Any, features: Any, coefficients: Any) -> np.ndarray:
    """Sum of scaled decoder rows.

    Args:
        W_dec: (d_sae, d_in) decoder matrix.
        features: (n_feat,) int feature indices in [0, d_sae).
        coefficients: (n_feat,) finite coefficients (negative to steer away).

    Returns:
        (d_in,) float32 vector.
    """
    return kernels.steering_vector(W_dec, features, coefficients)


@dataclass(frozen=True, eq=False)
class Intervention:
    """A vector added to the residual stream at one layer's site.

    Attributes:
        layer: decoder layer index whose site is steered.
        vector: (d_in,) float32 vector added at the generation positions.
        features: the SAE features that built the vector (for reports).
        coefficients: their coefficients, same order.
    """

    layer: int
    vector: np.ndarray
    features: tuple[int, ...] = field(default=())
    coefficients: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        vec = kernels.as_float32("vector", self.vector, ndim=1)
        if not np.isfinite(vec).all():
            raise ValueError("vector contains NaN or Inf")
        if len(self.features) != len(self.coefficients):
            raise ValueError("features and coefficients must have the same length")
        object.__setattr__(self, "vector", vec)
        object.__setattr__(self, "layer", int(self.layer))

    @classmethod
    def from_features(cls, layer: int, W_dec: Any, features: Any, coefficients: Any,
                      scale: float = 1.0) -> Intervention:
        """Build the intervention ``scale · Σ c_k W_dec[f_k]`` at ``layer``."""
        feats = tuple(int(f) for f in np.asarray(features).reshape(-1))
        coefs = tuple(float(c) * float(scale) for c in np.asarray(coefficients).reshape(-1))
        vec = steering_vector(W_dec, np.asarray(feats, dtype=np.int64), np.asarray(coefs))
        return cls(layer, vec, feats, coefs)

    def __iter__(self) -> Iterator[Any]:
        """Unpack as ``layer, vector``."""
        return iter((self.layer, self.vector))
