"""The C core's NumPy face: SAE encoding fused with pooling, the streaming correlation, steering deltas.

No torch here: everything takes and returns NumPy arrays.

- :mod:`~corrsteer.core.kernels`: stateless kernels (``sae_encode``, ``sae_encode_pooled``,
  ``sae_pool_rows``, ``steering_vector``, ``add_to_rows``) and ``build_info``;
- :class:`Pooler`: pooled SAE activations streamed over generation (METHOD.md §3);
- :class:`CorrelationAccumulator`: the streaming point-biserial correlation (METHOD.md §4);
- :mod:`~corrsteer.core.reference`: the pure-NumPy twin of all of the above, which the
  tests compare the C core against.

Example:
    >>> import numpy as np
    >>> from corrsteer.core import CorrelationAccumulator, steering_vector
    >>> acc = CorrelationAccumulator(2)
    >>> acc.update(np.array([[1, 0], [0, 1], [1, 1]], np.float32), np.array([1, 0, 1]))
    >>> acc.top(1)["index"].tolist()
    [0]
    >>> steering_vector(np.eye(2, dtype=np.float32), [0], [2.5])
    array([2.5, 0. ], dtype=float32)
"""

from corrsteer.core.correlation import CorrelationAccumulator, DegenerateRewardsWarning, FormatError
from corrsteer.core.kernels import build_info, steering_vector
from corrsteer.core.pooling import Pooler

__all__ = ["CorrelationAccumulator", "DegenerateRewardsWarning", "FormatError", "Pooler", "build_info",
           "steering_vector"]
