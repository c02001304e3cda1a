"""One JSON sanitiser for everything corrsteer writes: results, configs, SAE metadata, records.

:func:`to_jsonable` turns NumPy scalars and arrays, tuples, sets and paths into plain JSON
values, recursively, and refuses what has no faithful JSON form (NaN and infinities become
``None`` only when ``nan_to_none`` is set; anything else unknown raises ``TypeError`` naming
its type, or becomes ``str(value)`` with ``fallback=str``).

Example:
    >>> import numpy as np
    >>> to_jsonable({"r": np.float64(0.5), "idx": np.arange(2), "layers": (3, 6)})
    {'r': 0.5, 'idx': [0, 1], 'layers': [3, 6]}
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["to_jsonable"]


def to_jsonable(obj: Any, *, nan_to_none: bool = False, fallback: Callable[[Any], Any] | None = None) -> Any:
    """A copy of ``obj`` made of dicts (str keys), lists, str, int, float, bool and None.

    Args:
        obj: the value to convert.
        nan_to_none: write NaN and ±inf floats as ``None`` (JSON has no NaN); otherwise
            they are kept and ``json.dumps(..., allow_nan=False)`` will refuse them.
        fallback: called on any other value (e.g. ``str``); None raises ``TypeError``.

    Returns:
        The converted value.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return None if nan_to_none and not math.isfinite(value) else value
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, nan_to_none=nan_to_none, fallback=fallback) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), nan_to_none=nan_to_none, fallback=fallback)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, nan_to_none=nan_to_none, fallback=fallback) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v, nan_to_none=nan_to_none, fallback=fallback) for v in sorted(obj, key=repr)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if fallback is not None:
        return fallback(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable; convert it to a number, string, list or dict")
