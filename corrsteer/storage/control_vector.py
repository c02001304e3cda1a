"""llama.cpp control vectors: the GGUF file that llama.cpp's control-vector loader reads.

The format, as ``common_control_vector_load`` in llama.cpp reads it:

- one tensor ``direction.N`` per steered block: F32, 1-D, ``d_model`` (llama.cpp's
  ``n_embd``) values, every tensor of the same width;
- ``N`` is the 0-based index of the decoder block whose **output** the vector is added to
  (llama.cpp's ``l_out``, corrsteer's ``resid_post`` site of layer ``N``, METHOD.md §1);
  ``N = 0`` is refused by llama.cpp, which never steers the first block;
- metadata ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the
  architecture name of the model it was made for, e.g. ``gemma3``) and
  ``controlvector.layer_count`` (the number of ``direction`` tensors).

llama.cpp adds the vector at **every** position, prompt included (corrsteer steers only
the generation positions; ``positions="all"`` reproduces llama.cpp).

:func:`blocks_from_sites` maps corrsteer's ``(layer, vector, site)`` interventions to
block indices: ``resid_post`` of layer ``l`` is block ``l``, ``resid_pre`` of layer ``l``
is the output of block ``l - 1``; anything else, and block 0, cannot be expressed.
:func:`write_control_vector` and :func:`read_control_vector` write and read the file with
the ``gguf`` package; the reader is as strict as llama.cpp's loader and says what is wrong.

Example:
    >>> import numpy as np
    >>> blocks_from_sites([(5, np.ones(4, np.float32), "resid_pre")])  # doctest: +ELLIPSIS
    {4: array([1., 1., 1., 1.], dtype=float32)}
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer.storage.atomic import write_bytes

__all__ = ["ARCH", "ControlVector", "blocks_from_sites", "read_control_vector", "write_control_vector"]

ARCH = "controlvector"  # general.architecture of every control-vector file
_NAME = re.compile(r"^direction\.(\d+)$")


@dataclass(frozen=True)
class ControlVector:
    """The contents of a control-vector file."""

    directions: dict[int, np.ndarray]  # block N -> (d_model,) float32, added to block N's output
    model_hint: str | None = None  # controlvector.model_hint (the model's architecture name), if present
    layer_count: int | None = None  # controlvector.layer_count, if present
    meta: dict[str, Any] = field(default_factory=dict)  # other metadata keys (strings and numbers only)

    @property
    def d_model(self) -> int:
        """The width of every direction (llama.cpp's ``n_embd``)."""
        return int(next(iter(self.directions.values())).shape[0])


def blocks_from_sites(interventions: Iterable[tuple[int, Any, str]]) -> dict[int, np.ndarray]:
    """``{block N: (d_model,) float32}`` from ``[(layer, vector, site)]``; vectors on one block add up.

    Raises:
        ValueError: a site llama.cpp cannot steer (anything but the residual stream between
            blocks), block 0 (llama.cpp never steers it), or vectors of different widths.
    """
    out: dict[int, np.ndarray] = {}
    for layer, vector, site in interventions:
        layer = int(layer)
        if site == "resid_post":
            block = layer
        elif site == "resid_pre":
            block = layer - 1
        else:
            raise ValueError(f"layer {layer} is steered at site {site!r}; a llama.cpp control vector can only "
                             "add to the residual stream between blocks (resid_post of block N, or resid_pre "
                             "of block N+1), so this selection cannot be exported")
        if block < 1:
            what = "the embeddings" if block < 0 else "the output of block 0"
            raise ValueError(f"layer {layer} ({site}) steers {what}; llama.cpp never steers block 0 (it refuses "
                             "direction.0), so this selection cannot be exported. Select features at a later layer")
        v = np.asarray(vector, dtype=np.float64).reshape(-1)
        out[block] = out[block] + v if block in out else v
    widths = {v.shape[0] for v in out.values()}
    if len(widths) > 1:
        raise ValueError(f"the vectors have different widths {sorted(widths)}; one control vector holds one "
                         "model's d_model")
    return {block: out[block].astype(np.float32) for block in sorted(out)}


def write_control_vector(path: str | os.PathLike[str], directions: Mapping[int, Any], model_hint: str) -> Path:
    """Write ``{block N: (d_model,) vector}`` as a llama.cpp control vector, atomically.

    Args:
        path: the ``.gguf`` file to write (its folder must exist).
        directions: block index (>= 1) -> vector; at least one.
        model_hint: the model's llama.cpp architecture name (``gemma3``, ``llama``).

    Returns:
        ``path`` as a ``Path``.
    """
    import gguf

    if not directions:
        raise ValueError("nothing to export: the selection steers no layer")
    if not isinstance(model_hint, str) or not model_hint:
        raise ValueError(f"model_hint must be the model's architecture name (e.g. 'gemma3'), got {model_hint!r}")
    rows = {}
    for block, vector in sorted(directions.items()):
        v = np.ascontiguousarray(vector, dtype=np.float32)
        if isinstance(block, bool) or int(block) != block or block < 1:
            raise ValueError(f"block {block!r}: llama.cpp control vectors start at direction.1")
        if v.ndim != 1 or not np.isfinite(v).all():
            raise ValueError(f"block {block}: the vector must be 1-D and finite, got shape {v.shape}")
        rows[int(block)] = v
    if len({v.shape[0] for v in rows.values()}) != 1:
        raise ValueError("the vectors have different widths; one control vector holds one model's d_model")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "cv.gguf"
        writer = gguf.GGUFWriter(str(scratch), ARCH)
        writer.add_string(f"{ARCH}.model_hint", model_hint)
        writer.add_int32(f"{ARCH}.layer_count", len(rows))
        for block, v in rows.items():
            writer.add_tensor(f"direction.{block}", v)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        data = scratch.read_bytes()
    return write_bytes(path, data)


def read_control_vector(path: str | os.PathLike[str], *, d_model: int | None = None) -> ControlVector:
    """Read a llama.cpp control vector (ours, repeng's, or llama.cpp's ``cvector-generator``'s).

    Args:
        path: the ``.gguf`` file.
        d_model: the model's width; a different width raises.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a GGUF file, not a control vector (``general.architecture``), no
            tensor, a tensor not named ``direction.N`` with ``N >= 1``, not F32, not 1-D, of
            another width than the others or than ``d_model``, or holding NaN/Inf.
    """
    import gguf

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"control vector {str(p)!r} does not exist")
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as exc:  # noqa: BLE001 - the gguf reader raises many kinds on a bad file
        raise ValueError(f"{str(p)!r} is not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
    meta = {name: _value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    arch = meta.get("general.architecture")
    if arch != ARCH:
        raise ValueError(f"{str(p)!r} is not a llama.cpp control vector: general.architecture is {arch!r}, "
                         f"not {ARCH!r} (is it a model file?)")
    if not reader.tensors:
        raise ValueError(f"{str(p)!r} holds no direction tensor; a control vector has direction.N tensors")
    directions: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        m = _NAME.match(t.name)
        if not m:
            raise ValueError(f"{str(p)!r}: tensor {t.name!r} is not named direction.N (N the block index)")
        block = int(m.group(1))
        if block == 0:
            raise ValueError(f"{str(p)!r}: tensor direction.0 steers block 0, which llama.cpp refuses")
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"{str(p)!r}: tensor {t.name} is {t.tensor_type.name}; direction tensors must be F32")
        dims = [int(s) for s in t.shape]  # ggml order (fastest first); ggml_n_dims ignores trailing 1s
        while len(dims) > 1 and dims[-1] == 1:
            dims.pop()
        if len(dims) != 1:
            raise ValueError(f"{str(p)!r}: tensor {t.name} has shape {tuple(int(s) for s in t.shape)}; direction "
                             "tensors must be 1-D (d_model values)")
        v = np.array(t.data, dtype=np.float32).reshape(-1)
        if not np.isfinite(v).all():
            raise ValueError(f"{str(p)!r}: tensor {t.name} contains NaN or Inf")
        directions[block] = v
    widths = sorted({v.shape[0] for v in directions.values()})
    if len(widths) != 1:
        raise ValueError(f"{str(p)!r}: the direction tensors have different widths {widths}")
    if d_model is not None and widths[0] != int(d_model):
        raise ValueError(f"{str(p)!r} holds vectors of width {widths[0]} but the model has d_model={d_model}; "
                         "it was made for another model")
    hint, count = meta.pop(f"{ARCH}.model_hint", None), meta.pop(f"{ARCH}.layer_count", None)
    return ControlVector(directions=dict(sorted(directions.items())), model_hint=hint if isinstance(hint, str) else None,
                         layer_count=int(count) if isinstance(count, (int, np.integer)) else None, meta=meta)


def _value(f: Any) -> Any:
    """A scalar metadata value (str or number) of a GGUF field; None for arrays."""
    if len(f.types) != 1 or not f.data:
        return None
    part = f.parts[f.data[0]]
    if f.types[0] == _string_type():
        return bytes(part).decode("utf-8", errors="replace")
    arr = np.asarray(part)
    return arr.reshape(-1)[0].item() if arr.size == 1 else None


def _string_type() -> Any:
    import gguf

    return gguf.GGUFValueType.STRING
