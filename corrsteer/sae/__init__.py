"""SAEs: the :class:`SAE` class, plus lazily loaded ``formats`` (load/save), ``hub``, ``train`` and helpers.

Example:
    >>> from corrsteer.sae import SAE
"""

from __future__ import annotations

import importlib
from typing import Any

from corrsteer.sae.model import SAE

__all__ = ["SAE"]
_SUBMODULES = {"formats", "train", "model", "defaults", "harvest", "hub", "hook_names", "safetensors_io"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"corrsteer.sae.{name}")
    raise AttributeError(f"module 'corrsteer.sae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)
