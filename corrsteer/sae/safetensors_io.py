"""Safetensors files, read with NumPy alone (bfloat16 included) and checked byte by byte.

:func:`read_safetensors` reads every tensor into NumPy and names the tensor whose bytes
do not match its dtype and shape (a truncated download fails with a clear message);
:func:`write_safetensors` writes float32 tensors (through the ``safetensors`` package).
Used by :mod:`corrsteer.sae.formats` (which re-exports both). Nothing here imports torch.

Example:
    >>> from corrsteer.sae.safetensors_io import read_safetensors       # doctest: +SKIP
    >>> w = read_safetensors("sae_weights.safetensors")
    >>> w["W_enc"].shape
    (640, 4096)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from corrsteer.errors import CorrsteerError

__all__ = ["read_safetensors", "write_safetensors"]

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4"}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file into NumPy (bfloat16 widened to float32).

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``{name: array}`` in the file's shapes.

    Raises:
        CorrsteerError: the file is truncated, its header is corrupt, or a tensor's
            bytes do not match its declared dtype and shape (the message names it).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CorrsteerError(f"{p}: cannot read ({exc})") from exc
    if len(data) < 8:
        raise CorrsteerError(f"{p}: {len(data)} bytes, too short for a safetensors file "
                             f"(truncated download?)")
    n_header = int.from_bytes(data[:8], "little")
    if n_header > len(data) - 8:
        raise CorrsteerError(f"{p}: header claims {n_header} bytes but the file has {len(data)}; "
                             f"the file is truncated or not safetensors")
    try:
        header = json.loads(data[8:8 + n_header])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorrsteerError(f"{p}: corrupt safetensors header ({exc})") from exc
    body = memoryview(data)[8 + n_header:]
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = info["dtype"], list(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CorrsteerError(f"{p}: corrupt header entry for tensor {name!r}") from exc
        if dtype not in _ST_DTYPES:
            raise CorrsteerError(f"{p}: tensor {name!r} has unsupported dtype {dtype}")
        np_dtype = np.dtype(_ST_DTYPES[dtype])
        n = int(np.prod(shape, dtype=np.int64))
        if stop > len(body) or start > stop:
            raise CorrsteerError(f"{p}: tensor {name!r} ends at byte {stop} of a {len(body)}-byte "
                                 f"body; the file is truncated, download it again")
        if stop - start != n * np_dtype.itemsize:
            raise CorrsteerError(f"{p}: tensor {name!r} has {stop - start} bytes, but {dtype} "
                                 f"{tuple(shape)} needs {n * np_dtype.itemsize}")
        arr = np.frombuffer(body[start:stop], dtype=np_dtype)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.reshape(shape).copy()
    return out


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Write float32 C-contiguous copies of ``tensors`` to a safetensors file."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
              str(path), metadata={"format": "np"})
