"""Pure-NumPy twin of every C kernel: the specification of corrsteer's core, in code.

Each function here computes what the C core computes, written for the reader rather
than for speed, with the signature of its ``corrsteer.core.kernels`` counterpart:
``sae_encode(sae, x)``, ``sae_encode_pooled(sae, x, mask=None, mode="max")``,
``sae_pool_rows(sae, x, seq, n_seq, mode="max")``, ``steering_vector(W_dec, features,
coefficients)``, ``add_to_rows(x, v, mask=None)``; ``Pooler`` and
``CorrelationAccumulator`` have the API of ``corrsteer.core.Pooler`` and
``corrsteer.core.CorrelationAccumulator``. The tests compare twin and kernel over grids of
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
    >>> from corrsteer.core import reference
    >>> acc = reference.CorrelationAccumulator(2)
    >>> acc.update(np.array([[1, 0], [0, 1]], np.float32), np.array([1, 0]))
    >>> acc.correlation().tolist()
    [1.0, -1.0]
"""

from corrsteer.core.reference.correlation import CONST_RTOL, TOP_DTYPE, CorrelationAccumulator
from corrsteer.core.reference.sae import (
                                          Pooler,
                                          SAEArrays,
                                          activate,
                                          add_to_rows,
                                          pool,
                                          preactivation,
                                          sae_arrays,
                                          sae_decode,
                                          sae_encode,
                                          sae_encode_pooled,
                                          sae_pool_rows,
                                          steering_vector,
)

__all__ = ["CONST_RTOL", "TOP_DTYPE", "CorrelationAccumulator", "Pooler", "SAEArrays", "activate", "add_to_rows",
           "pool", "preactivation", "sae_arrays", "sae_decode", "sae_encode", "sae_encode_pooled", "sae_pool_rows",
           "steering_vector"]
