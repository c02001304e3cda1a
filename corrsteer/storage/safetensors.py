"""Safetensors files: read and written with the ``safetensors`` package's own API.

:func:`read_tensors` returns every tensor as a NumPy array (bfloat16 widened exactly to
float32 through torch, since NumPy has no bfloat16). The ``safetensors`` reader checks the
header for us: offsets must lie in the body, be contiguous and disjoint, and match each
tensor's dtype × shape, so a truncated, forged or overlapping file is refused, never half
read. Its errors come back as one :class:`~corrsteer.errors.CorrsteerError` that names the
file. :func:`write_tensors` writes C-contiguous float32 copies.

Example:
    >>> from corrsteer.storage.safetensors import read_tensors      # doctest: +SKIP
    >>> read_tensors("sae_weights.safetensors")["W_enc"].shape
    (640, 4096)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from corrsteer.errors import CorrsteerError
from corrsteer.storage.atomic import write_bytes

__all__ = ["read_tensors", "write_tensors"]


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as NumPy arrays in the file's shapes.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``{name: array}``; bfloat16 tensors come back as float32 (exact).

    Raises:
        FileNotFoundError: no such file.
        CorrsteerError: the file is truncated, its header is corrupt or inconsistent,
            or it holds a dtype NumPy cannot represent (the message names the file).
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"safetensors file {str(p)!r} does not exist")
    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(p), framework="numpy") as fh:
            wide = []
            for name in fh.keys():
                if fh.get_slice(name).get_dtype() == "BF16":
                    wide.append(name)
                else:
                    out[name] = np.array(fh.get_tensor(name))
        if wide:
            import torch

            with safe_open(str(p), framework="pt") as fh:
                for name in wide:
                    out[name] = fh.get_tensor(name).to(torch.float32).numpy()
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise CorrsteerError(f"{p}: not a readable safetensors file ({exc}); the file is truncated, corrupt or "
                             "not safetensors: download or write it again") from exc
    return out


def write_tensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                  metadata: Mapping[str, str] | None = None) -> Path:
    """Write float32 C-contiguous copies of ``tensors`` to ``path`` atomically (:mod:`corrsteer.storage.atomic`)."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
                metadata=dict(metadata) if metadata else {"format": "np"})
    return write_bytes(path, data)
