"""corrsteer: correlation-based steering of language models with sparse-autoencoder features.

The workflow (METHOD.md), each step one call::

    model, tok = corrsteer.load_model("gemma-3-270m")
    saes = corrsteer.load_saes("default", model, tok)          # or {6: SAE.load(path)}, SAE.from_pretrained(...)
    task = corrsteer.get_task("food")
    col = corrsteer.collect(model, tok, task, saes, task.samples("train", 256))
    sel = corrsteer.select(col, saes, mode="all")
    with sel.apply(model):
        ...                                                     # model.generate(...) is steered
    ev = corrsteer.evaluate(model, tok, task, sel, task.samples("test", 100))

``corrsteer.run(RunConfig(...))`` does all of it and writes a report. The C core's NumPy
types (``CorrelationAccumulator``, ``Pooler``, kernels) live in :mod:`corrsteer.core`.
Importing ``corrsteer`` imports neither torch nor transformers: each name loads its
layer on first use.

Example:
    >>> import corrsteer
    >>> corrsteer.RunConfig(task="arithmetic", mode="pruned").check().mode
    'pruned'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it (loaded on first access, so that `import corrsteer` stays light)
_API = {
    "load_model": "corrsteer.models",
    "SAE": "corrsteer.sae",
    "SAEConfig": "corrsteer.sae",
    "load_saes": "corrsteer.sae.sets",
    "capture": "corrsteer.hooks",
    "steer": "corrsteer.hooks",
    "collect": "corrsteer.method.collection",
    "select": "corrsteer.method.selection",
    "evaluate": "corrsteer.method.evaluation",
    "Selection": "corrsteer.method.features",
    "run": "corrsteer.pipeline",
    "RunConfig": "corrsteer.config",
    "get_task": "corrsteer.tasks",
    "register_task": "corrsteer.tasks",
    "list_tasks": "corrsteer.tasks",
    "CorrsteerError": "corrsteer.errors",
}

# the layers, bottom-up, also reachable as attributes: corrsteer.core.CorrelationAccumulator
_LAYERS = ("errors", "config", "storage", "core", "models", "hooks", "sae", "tasks", "method", "report",
           "pipeline", "studies", "cli")

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    if name in _LAYERS:
        return importlib.import_module(f"corrsteer.{name}")
    raise AttributeError(f"module 'corrsteer' has no attribute {name!r}; the C core's types are in corrsteer.core "
                         "(CorrelationAccumulator, Pooler, steering_vector)")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | set(_LAYERS))
