"""``steer``: add vectors to the residual stream at exactly the generation positions.

It attaches to the residual stream of decoder layers (``resid_post`` by default, see
:mod:`corrsteer.models.sites`) and acts only on the columns that
:mod:`corrsteer.hooks.positions` marks as generation positions (METHOD.md §2): for a prompt
of ``n`` tokens and ``T`` generated ones, the positions ``n-1 … n+T-2``, counted by
absolute position, so that the result is the same with the KV cache on or off, for a
sequence alone or in a left-padded batch. ``positions="all"`` takes every non-padding
position instead. Hooks are removed when the block ends, also after an exception.

``steer`` takes vectors; where they come from (a :class:`corrsteer.Selection`, a
llama.cpp control vector, a user's own direction) is the caller's business, and the
scale of a selection is applied where the selection builds its vectors.

Example:
    >>> with steer(model, {6: vector}):                                # doctest: +SKIP
    ...     out = model.generate(**batch, max_new_tokens=32, do_sample=False)

When capture and steering are both active at one site, steering runs first: capture
reads the steered stream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from corrsteer.config import POSITIONS, check_choice
from corrsteer.hooks import positions as _positions
from corrsteer.models.sites import attach, check_layer, check_site
from corrsteer.models.layers import d_model, find_layers

log = logging.getLogger(__name__)

__all__ = ["Steering", "steer"]


class Steering(_positions.TrackedHooks):
    """Adds steering vectors to the residual stream while the block runs (see :func:`steer`)."""

    def __init__(self, model: torch.nn.Module, interventions: Any, positions: str = "generation") -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a transformers model), got {type(model).__name__}")
        self.model = model
        self.positions = check_choice("positions", positions, POSITIONS)
        self.layers = find_layers(model)
        width = d_model(model)
        self.vectors: dict[tuple[int, str], torch.Tensor] = {}  # (layer, site) -> (d_model,) float32
        for layer, vector, site in _parse_interventions(interventions):
            what = f"intervention at layer {layer}"
            layer = check_layer(layer, len(self.layers), what)
            key = (layer, check_site(site, what))
            vec = _vector(vector, width, what)
            self.vectors[key] = self.vectors[key] + vec if key in self.vectors else vec
        self._handles: list[Any] = []
        self._tracker: _positions.PositionTracker | None = None
        if not self.vectors:
            log.info("steer(): no interventions, the model runs unsteered")

    def __enter__(self) -> Steering:
        self._install(lambda: (attach(self.layers[layer], site, self._site_fn(layer, site, vec),
                                      prepend=True) for (layer, site), vec in self.vectors.items()),
                      listen=False, what="steer()")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _site_fn(self, layer: int, site: str, vec: torch.Tensor) -> Any:
        tracker = self._tracker
        where = f"steer() at layer {layer} ({site})"
        generation = self.positions == "generation"
        cast: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

        def fn(hidden: torch.Tensor) -> torch.Tensor:  # hidden: (n_rows, n_cols, d_model)
            call = tracker.current(hidden, where)
            start = max(call.first_gen - call.past, 0) if generation else 0
            if start >= call.n_cols:
                return hidden
            key = (hidden.dtype, hidden.device)
            v = cast.get(key)
            if v is None:
                v = cast[key] = vec.to(device=hidden.device, dtype=hidden.dtype)
            valid = None if call.valid is None else call.valid[:, start:, None]
            if start == 0 and valid is None:
                return hidden + v
            seg = hidden[:, start:]
            new = seg + v if valid is None else torch.where(valid, seg + v, seg)
            return new if start == 0 else torch.cat([hidden[:, :start], new], dim=1)

        return fn


def steer(model: torch.nn.Module, interventions: Any, positions: str = "generation") -> Steering:
    """Add vectors to the residual stream at the generation positions.

    Args:
        model: a transformers causal LM (or its base model).
        interventions: ``{layer: vector}``, or a list of ``(layer, vector)`` or
            ``(layer, vector, site)``. Vectors are (d_model,) numpy arrays or torch
            tensors; vectors at the same layer and site add up. (A
            :class:`corrsteer.Selection` steers with ``selection.apply(model)``.)
        positions: ``"generation"`` (positions ``n-1 … n+T-2``) or ``"all"`` (every
            non-padding position, prompt included).

    Returns:
        A context manager; nesting adds the vectors of both contexts.

    Raises:
        ValueError / TypeError: a layer out of range, a vector of the wrong shape, a
            non-finite value, an unsupported site.
    """
    return Steering(model, interventions, positions=positions)


def _parse_interventions(interventions: Any) -> list[tuple[Any, Any, str]]:
    """Normalise every accepted form to ``[(layer, vector, site)]``."""
    if isinstance(interventions, Mapping):
        items: list[Any] = list(interventions.items())
    elif isinstance(interventions, (list, tuple)):
        items = list(interventions)
    else:
        hint = " (steer with selection.apply(model))" if hasattr(interventions, "apply") else ""
        raise TypeError("interventions must be a {layer: vector} mapping or a list of (layer, vector[, site]), "
                        f"got {type(interventions).__name__}{hint}")
    out = []
    for item in items:
        if isinstance(item, (list, tuple)) and len(item) in (2, 3):
            out.append((item[0], item[1], item[2] if len(item) == 3 else "resid_post"))
        else:
            raise TypeError(f"each intervention must be (layer, vector) or (layer, vector, site), got {item!r}")
    return out


def _vector(vector: Any, d_model: int | None, what: str) -> torch.Tensor:
    """A (d_model,) float32 CPU tensor from a numpy array or tensor, checked."""
    if torch.is_tensor(vector):
        vec = vector.detach().to("cpu")
    elif isinstance(vector, np.ndarray):
        vec = torch.from_numpy(np.ascontiguousarray(vector))
    else:
        raise TypeError(f"{what}: the vector must be a numpy array or torch tensor, got {type(vector).__name__}")
    if not vec.is_floating_point():
        raise TypeError(f"{what}: the vector must be floating point, got {vec.dtype}")
    if vec.ndim != 1 or (d_model is not None and vec.shape[0] != d_model):
        raise ValueError(f"{what}: the vector has shape {tuple(vec.shape)} but the model has "
                         f"d_model={d_model}; expected ({d_model},)")
    vec = vec.to(torch.float32)
    if not bool(torch.isfinite(vec).all()):
        raise ValueError(f"{what}: the vector contains NaN or inf")
    return vec
