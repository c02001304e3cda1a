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

Different interventions for different rows of one batch: give a list of intervention
sets and ``rows``, the set of each batch row (``None``: that row is not steered). Row
``i`` then gets exactly what ``steer(model, sets[rows[i]])`` would give it alone, bit
for bit (the same float32 sums, the same additions), at the same positions; a row
without a set is left untouched. ``Steering.assign`` changes the rows between calls.

    >>> with steer(model, [{6: v_a}, {6: v_b, 9: v_c}], rows=[0, 1, None, 0]):   # doctest: +SKIP
    ...     out = model.generate(**batch4, max_new_tokens=32, do_sample=False)

When capture and steering are both active at one site, steering runs first: capture
reads the steered stream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from corrsteer.config import POSITIONS, check_choice
from corrsteer.errors import CorrsteerError
from corrsteer.hooks import positions as _positions
from corrsteer.models.sites import attach, check_layer, check_site
from corrsteer.models.layers import d_model, find_layers

log = logging.getLogger(__name__)

__all__ = ["Steering", "steer"]


class Steering(_positions.TrackedHooks):
    """Adds steering vectors to the residual stream while the block runs (see :func:`steer`)."""

    def __init__(self, model: torch.nn.Module, interventions: Any, positions: str = "generation",
                 rows: Sequence[int | None] | None = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a transformers model), got {type(model).__name__}")
        self.model = model
        self.positions = check_choice("positions", positions, POSITIONS)
        self.layers = find_layers(model)
        width = d_model(model)
        self.per_row = rows is not None
        if self.per_row:
            if isinstance(interventions, Mapping) or not isinstance(interventions, (list, tuple)):
                raise TypeError("with rows=..., interventions must be a list of intervention sets (one "
                                f"{{layer: vector}} mapping or list per set), got {type(interventions).__name__}")
            sets = [self._parse(s, width, f"set {k}") if s else {} for k, s in enumerate(interventions)]
        else:
            sets = [self._parse(interventions, width, "")]
        self.sets: list[dict[tuple[int, str], torch.Tensor]] = sets  # per set: (layer, site) -> (d_model,) float32
        self.vectors = sets[0] if not self.per_row else {}  # the one set (rows=None)
        # per (layer, site): the vector of every set there, (n_sets + 1, d_model), the last row zeros; and which
        # sets have one there, (n_sets + 1,) bool. A row of set k reads row k; a row of no set the last row.
        keys = sorted({key for s in sets for key in s})
        self._tables = {key: (torch.stack([s.get(key, torch.zeros(width)) for s in sets] + [torch.zeros(width)]),
                              torch.tensor([key in s for s in sets] + [False])) for key in keys}
        self._rows: torch.Tensor | None = None  # (n_rows,) int64 set index per row, n_sets for none
        self._rows_on: dict[torch.device, torch.Tensor] = {}
        if self.per_row:
            self.assign(rows)
        self._handles: list[Any] = []
        self._tracker: _positions.PositionTracker | None = None
        if not keys:
            log.info("steer(): no interventions, the model runs unsteered")

    def _parse(self, interventions: Any, width: int, label: str) -> dict[tuple[int, str], torch.Tensor]:
        vectors: dict[tuple[int, str], torch.Tensor] = {}
        for layer, vector, site in _parse_interventions(interventions):
            what = f"intervention {label + ' ' if label else ''}at layer {layer}"
            layer = check_layer(layer, len(self.layers), what)
            key = (layer, check_site(site, what))
            vec = _vector(vector, width, what)
            vectors[key] = vectors[key] + vec if key in vectors else vec
        return vectors

    def assign(self, rows: Sequence[int | None]) -> None:
        """Set the intervention set of each row of the next calls (``None`` or ``-1``: not steered).

        Raises:
            ValueError: not a per-row steering (``rows`` was not given), or a set index out of range.
        """
        if not self.per_row:
            raise ValueError("assign() needs a per-row steering: steer(model, [set_0, set_1, ...], rows=[...])")
        n_sets = len(self.sets)
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) and not torch.is_tensor(rows):
            raise TypeError(f"rows must be a sequence of set indices (or None), got {type(rows).__name__}")
        index = []
        for i, k in enumerate(rows.tolist() if torch.is_tensor(rows) else rows):
            if k is None or (isinstance(k, int) and not isinstance(k, bool) and k == -1):
                index.append(n_sets)
            elif isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 0 <= int(k) < n_sets:
                index.append(int(k))
            else:
                raise ValueError(f"rows[{i}] = {k!r}: each row takes a set index in 0 … {n_sets - 1}, or None "
                                 "for no steering")
        self._rows = torch.tensor(index, dtype=torch.int64)
        self._rows_on = {}

    def __enter__(self) -> Steering:
        self._install(lambda: (attach(self.layers[layer], site, self._site_fn(layer, site), prepend=True)
                               for layer, site in self._tables), listen=False, what="steer()")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _row_index(self, n_rows: int, device: torch.device, where: str) -> torch.Tensor:
        rows = self._rows
        if rows is None or rows.shape[0] != n_rows:
            raise CorrsteerError(f"{where}: the steering assigns {0 if rows is None else rows.shape[0]} rows but "
                                 f"the model was called with {n_rows} rows; call assign() with one set per row")
        on = self._rows_on.get(device)
        if on is None:
            on = self._rows_on[device] = rows.to(device)
        return on

    def _site_fn(self, layer: int, site: str) -> Any:
        tracker = self._tracker
        where = f"steer() at layer {layer} ({site})"
        generation = self.positions == "generation"
        table, has = self._tables[(layer, site)]
        single = None if self.per_row else table[0]
        cast: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

        def fn(hidden: torch.Tensor) -> torch.Tensor:  # hidden: (n_rows, n_cols, d_model)
            call = tracker.current(hidden, where)
            start = max(call.first_gen - call.past, 0) if generation else 0
            if start >= call.n_cols:
                return hidden
            key = (hidden.dtype, hidden.device)
            if key not in cast:
                vecs = (single if single is not None else table).to(device=hidden.device, dtype=hidden.dtype)
                cast[key] = (vecs, has.to(hidden.device))
            vecs, on = cast[key]
            valid = None if call.valid is None else call.valid[:, start:, None]
            if single is not None:  # one set for every row: (d_model,)
                if start == 0 and valid is None:
                    return hidden + vecs
                seg = hidden[:, start:]
                new = seg + vecs if valid is None else torch.where(valid, seg + vecs, seg)
            else:  # a set per row: row i adds vecs[k_i] where it has one, and is left as it is elsewhere
                k = self._row_index(call.n_rows, hidden.device, where)
                steered = on[k][:, None, None]  # (n_rows, 1, 1)
                mask = steered if valid is None else steered & valid
                seg = hidden[:, start:]
                new = torch.where(mask, seg + vecs[k][:, None, :], seg)
            return new if start == 0 else torch.cat([hidden[:, :start], new], dim=1)

        return fn


def steer(model: torch.nn.Module, interventions: Any, positions: str = "generation",
          rows: Sequence[int | None] | None = None) -> Steering:
    """Add vectors to the residual stream at the generation positions.

    Args:
        model: a transformers causal LM (or its base model).
        interventions: ``{layer: vector}``, or a list of ``(layer, vector)`` or
            ``(layer, vector, site)``. Vectors are (d_model,) numpy arrays or torch
            tensors; vectors at the same layer and site add up. (A
            :class:`corrsteer.Selection` steers with ``selection.apply(model)``.)
        positions: ``"generation"`` (positions ``n-1 … n+T-2``) or ``"all"`` (every
            non-padding position, prompt included).
        rows: per-row steering: then ``interventions`` is a list of intervention sets
            (each in one of the forms above; ``None`` or ``{}`` for an empty set) and
            ``rows[i]`` the set of batch row ``i`` (``None`` or -1: not steered). The
            rows are those of the model call (``Steering.assign`` changes them).

    Returns:
        A context manager; nesting adds the vectors of both contexts.

    Raises:
        ValueError / TypeError: a layer out of range, a vector of the wrong shape, a
            non-finite value, an unsupported site, a row's set index out of range.
        CorrsteerError: (per-row) the model is called with another number of rows.
    """
    return Steering(model, interventions, positions=positions, rows=rows)


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
