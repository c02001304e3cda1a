"""corrsteer: correlation-based steering of language models with SAE features.

The numeric core (SAE encoding fused with pooling, the streaming point-biserial
accumulator, steering deltas) is a C99 library exposed as ``corrsteer._core``;
everything here is a thin layer over it. Importing ``corrsteer`` does not import
torch or transformers: those load with the modules that need them.

Example:
    >>> import numpy as np, corrsteer
    >>> acc = corrsteer.CorrelationAccumulator(4)
    >>> acc.update(np.eye(4, dtype=np.float32), np.array([1, 0, 0, 1]))
    >>> acc.n
    4
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "SAE": "corrsteer.sae.model",
    "Pooler": "corrsteer.pooling",
    "CorrelationAccumulator": "corrsteer.correlation",
    "steering_vector": "corrsteer.steering",
    "build_info": "corrsteer.kernels",
    "CorrsteerError": "corrsteer.errors",
    "DegenerateRewardsWarning": "corrsteer.correlation",
    "Intervention": "corrsteer.steering",
    "load_model": "corrsteer.models",
    "find_layers": "corrsteer.layers",
    "capture": "corrsteer.hooks",
    "steer": "corrsteer.hooks",
}
_SUBMODULES = {"reference", "kernels", "models", "hooks", "tasks", "sae", "evaluation",
               "report", "collection", "selection", "pipeline", "generation", "cli"}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"corrsteer.{name}")
    raise AttributeError(f"module 'corrsteer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
