"""Apply a llama.cpp control vector to a ``llama_cpp.Llama`` (llama-cpp-python, the ``llama`` extra).

llama-cpp-python has no call that reads a control-vector file: only the low-level
``llama_set_adapter_cvec(ctx, data, len, n_embd, il_start, il_end)``, whose ``data`` holds
``n_embd`` floats per layer **starting at layer 1**. :func:`set_control_vector` reads the file
(:func:`corrsteer.storage.control_vector.read_control_vector`, the rules of llama.cpp's own
loader) and lays it out that way, over every layer: llama.cpp leaves the layers past the end
of a shorter buffer as a previous call set them, so switching from a vector on layer 7 to
one on layer 6 would otherwise keep both. llama.cpp adds the vector at every position,
prompt included (corrsteer's ``positions="all"``).

Example:
    >>> from llama_cpp import Llama                                             # doctest: +SKIP
    >>> llm = Llama(model_path="gemma-3-270m-q4_k_m.gguf")                      # doctest: +SKIP
    >>> set_control_vector(llm, "steer.gguf")                                   # doctest: +SKIP
    >>> llm("The capital of France is", max_tokens=8)                           # doctest: +SKIP
    >>> set_control_vector(llm, None)                                           # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

from corrsteer.storage.control_vector import read_control_vector

__all__ = ["control_vector_buffer", "set_control_vector"]


def control_vector_buffer(path: str | os.PathLike[str], n_embd: int, n_layer: int, scale: float = 1.0) -> np.ndarray:
    """``(n_layer - 1) * n_embd`` float32: ``scale`` × ``direction.N`` at ``[(N-1) n_embd, N n_embd)``, zeros elsewhere.

    Raises:
        ValueError: a bad file, another width than ``n_embd``, or a block ``>= n_layer``.
    """
    cv = read_control_vector(path, d_model=n_embd)
    deep = [n for n in cv.directions if n >= n_layer]
    if deep:
        raise ValueError(f"{os.fspath(path)!r} steers block(s) {deep} but the model has {n_layer} blocks (0 … "
                         f"{n_layer - 1})")
    data = np.zeros((n_layer - 1) * n_embd, np.float32)
    for n, v in cv.directions.items():
        data[(n - 1) * n_embd:n * n_embd] = float(scale) * v
    return data


def set_control_vector(llm: Any, path: str | os.PathLike[str] | None, scale: float = 1.0) -> None:
    """Steer ``llm`` (a ``llama_cpp.Llama``) with the control vector in ``path``; None clears it.

    Raises:
        ValueError: a bad file or one made for another model (width, depth).
        RuntimeError: llama.cpp refused the vector.
    """
    import llama_cpp

    n_embd, n_layer = int(llm.n_embd()), int(llama_cpp.llama_model_n_layer(llm.model))
    if path is None:
        rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, n_embd, -1, -1)
    else:
        data = control_vector_buffer(path, n_embd, n_layer, scale)
        ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, ptr, data.size, n_embd, 1, n_layer)
    if rc != 0:
        raise RuntimeError(f"llama.cpp refused the control vector {path!r} (llama_set_adapter_cvec returned {rc})")
