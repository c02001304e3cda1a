"""``capture``: SAE activations pooled per sequence while the model generates.

Example:
    >>> with capture(model, {6: sae}, pool="max") as cap:              # doctest: +SKIP
    ...     out = model.generate(**batch, max_new_tokens=32, do_sample=False)
    >>> cap.result()[6].shape                                          # doctest: +SKIP
    (4, 16384)


For every forward call of the model, the position tracker (``corrsteer.hooks.positions``)
says which columns are generation positions and where each sequence ended; the
capture folds each row's residual stream at exactly those columns, once, into a
streaming pooled state per layer (METHOD.md §3): memory ``n_seq × d_sae`` per layer,
whatever the number of generated tokens.

Two backends pool:

- ``core``: the C core's :class:`corrsteer.core.Pooler` on the CPU. A cached decoding step
  hands it the (n_seq, d_model) rows with an ``active`` mask (no copy when the model
  runs in float32 on the CPU); a call with several new columns (prefill, or no KV
  cache) hands it the selected rows with their sequence index.
- ``torch``: encode and pool in torch on the model's device, float32, with a running
  max or sum and count (no host synchronisation during cached decoding steps).

Results come per *set* of sequences (one per ``generate`` call, or per top-level
forward that starts without a cache): ``cap.results`` is the list, ``cap.result()``
their rows concatenated in call order, ``cap.counts()`` the number of positions
pooled per row, ``cap.take()`` the result that it then forgets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from corrsteer.config import BACKENDS, POOLS, POSITIONS, check_choice
from corrsteer.core import Pooler
from corrsteer.hooks import positions as _positions
from corrsteer.models.sites import attach, check_layer, check_site
from corrsteer.models.layers import d_model, find_layers
from corrsteer.sae import as_saes

log = logging.getLogger(__name__)

__all__ = ["Capture", "capture"]


def _as_numpy32(x: torch.Tensor) -> np.ndarray:
    """``x`` as float32 numpy, without a copy when it already is float32 on the CPU."""
    x = x.detach()
    if x.dtype != torch.float32 or x.device.type != "cpu":
        x = x.to(device="cpu", dtype=torch.float32)
    return x.numpy()


class _CorePool:
    """One layer's pooled state in the C core's streaming ``Pooler``."""

    def __init__(self, sae: Any, n_seq: int, mode: str) -> None:
        self.pooler = Pooler(sae, n_seq, mode=mode)

    def push_step(self, x: torch.Tensor, active: torch.Tensor) -> None:  # x: (n_seq, d_in), active: (n_seq,)
        self.pooler.push(_as_numpy32(x), active.cpu().numpy())

    def push_rows(self, x: torch.Tensor, seq: torch.Tensor) -> None:  # x: (n_rows, d_in), seq: (n_rows,)
        self.pooler.push_rows(_as_numpy32(x), seq.to("cpu", torch.int64).numpy())

    def result(self) -> np.ndarray:
        return self.pooler.result()

    def counts(self) -> np.ndarray:
        return np.asarray(self.pooler.counts, dtype=np.int64)


class _TorchPool:
    """One layer's pooled state in torch: encode on the model's device, running max or sum."""

    def __init__(self, weights: dict[str, Any], n_seq: int, mode: str, device: torch.device) -> None:
        self.w = weights
        self.mode = mode
        self.acc = torch.zeros(n_seq, weights["W_enc"].shape[1], dtype=torch.float32, device=device)
        self.count = torch.zeros(n_seq, dtype=torch.int64, device=device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (n_rows, d_in) -> (n_rows, d_sae) float32
        w = self.w
        x = x.to(torch.float32)
        if w["apply_b_dec_to_input"]:
            x = x - w["b_dec"]
        pre = x @ w["W_enc"] + w["b_enc"]
        if w["architecture"] == "jumprelu":
            return pre * (pre > w["threshold"])
        if w["architecture"] == "relu":
            return torch.relu(pre)
        values, index = pre.topk(w["k"], dim=-1)
        return torch.zeros_like(pre).scatter_(-1, index, torch.relu(values))

    def push_step(self, x: torch.Tensor, active: torch.Tensor) -> None:
        f = self.encode(x)
        a = active[:, None]
        if self.mode == "max":
            self.acc = torch.where(a, torch.maximum(self.acc, f), self.acc)
        else:
            self.acc += torch.where(a, f, 0.0)
        self.count += active.to(torch.int64)

    def push_rows(self, x: torch.Tensor, seq: torch.Tensor) -> None:
        f = self.encode(x)
        if self.mode == "max":  # activations are >= 0, so the zero start is the max of no rows
            self.acc.index_reduce_(0, seq, f, "amax")
        else:
            self.acc.index_add_(0, seq, f)
        self.count.index_add_(0, seq, torch.ones_like(seq))

    def result(self) -> np.ndarray:
        z = self.acc if self.mode == "max" else self.acc / self.count.clamp(min=1)[:, None].to(self.acc.dtype)
        return z.cpu().numpy().astype(np.float32, copy=False)

    def counts(self) -> np.ndarray:
        return self.count.cpu().numpy()


@dataclass
class _OpenSet:
    set_id: int
    n_seq: int
    pools: dict[int, Any]
    next_col: int = 0  # absolute columns below this one are folded already
    select: tuple[int, torch.Tensor] | None = None  # (first local column, (n_rows, n) bool) of this call


@dataclass
class _Done:
    pooled: dict[int, np.ndarray]  # layer -> (n_seq, d_sae) float32
    counts: np.ndarray  # (n_seq,) int64 positions pooled per sequence
    meta: dict[str, Any] = field(default_factory=dict)


class Capture(_positions.TrackedHooks):
    """Context manager returned by :func:`capture`."""

    def __init__(self, model: torch.nn.Module, saes: Any, pool: str = "max", positions: str = "generation",
                 backend: str = "auto") -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a transformers model), got {type(model).__name__}")
        check_choice("pool", pool, POOLS)
        check_choice("positions", positions, POSITIONS)
        check_choice("backend", backend, BACKENDS)
        self.model, self.pool, self.positions = model, pool, positions
        self.layers = find_layers(model)
        self.saes = _parse_saes(saes, len(self.layers), d_model(model))
        self.sites = {layer: getattr(sae, "site", None) or "resid_post" for layer, sae in self.saes.items()}
        if backend == "auto":
            device = next(iter(model.parameters()), torch.empty(0)).device
            backend = "core" if device.type == "cpu" else "torch"
        self.backend = backend
        self._done: list[_Done] = []
        self._open: _OpenSet | None = None
        self._closed = (-1, 0)  # (set_id, next_col) of the set closed last
        self._handles: list[Any] = []
        self._tracker: _positions.PositionTracker | None = None
        self._weights: dict[tuple[int, torch.device], dict[str, Any]] = {}

    # -- context -------------------------------------------------------------------------

    def __enter__(self) -> Capture:
        self._install(lambda: (attach(self.layers[layer], self.sites[layer], self._site_fn(layer), prepend=False)
                               for layer in self.saes), listen=True, what="capture()")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()
        self.on_set_end()

    # -- called by the tracker -----------------------------------------------------------

    def on_call(self, call: _positions.Call) -> None:
        """Choose the columns of this call to fold: new, generation (or all), valid, not ended."""
        if self._open is None or self._open.set_id != call.set_id:
            self.on_set_end()
            self._open = _OpenSet(call.set_id, call.n_rows, {layer: self._new_pool(layer, sae, call)
                                                             for layer, sae in self.saes.items()})
            if self._closed[0] == call.set_id:  # closed early (take/mark): never fold a column twice
                self._open.next_col = self._closed[1]
        s = self._open
        first = max(s.next_col, call.first_gen if self.positions == "generation" else 0)
        j0 = first - call.past
        s.next_col = max(s.next_col, call.past + call.n_cols)
        if j0 >= call.n_cols:
            s.select = None
            return
        j0 = max(j0, 0)
        cols = torch.arange(call.past + j0, call.past + call.n_cols, device=call.end.device)
        take = cols[None, :] < call.end[:, None]  # (n_rows, n)
        if call.valid is not None:
            take = take & call.valid[:, j0:]
        s.select = (j0, take)

    def on_set_end(self) -> None:
        """Close the open set: its pooled state becomes one entry of :attr:`results`."""
        s, self._open = self._open, None
        if s is not None:
            self._closed = (s.set_id, s.next_col)
            first = next(iter(s.pools.values()))
            self._done.append(_Done({layer: p.result() for layer, p in s.pools.items()}, first.counts()))

    def _new_pool(self, layer: int, sae: Any, call: _positions.Call) -> Any:
        if self.backend == "core":
            return _CorePool(sae, call.n_rows, self.pool)
        device = call.end.device
        key = (layer, device)
        if key not in self._weights:
            def tensor(a: Any) -> torch.Tensor | None:
                # a copy: the SAE's arrays are read-only, torch wants writable memory
                return None if a is None else torch.tensor(np.asarray(a), dtype=torch.float32, device=device)

            self._weights[key] = {name: tensor(getattr(sae, name)) for name in
                                  ("W_enc", "b_enc", "b_dec", "threshold")}
            self._weights[key].update(architecture=sae.architecture, k=sae.k,
                                      apply_b_dec_to_input=bool(sae.apply_b_dec_to_input))
        return _TorchPool(self._weights[key], call.n_rows, self.pool, device)

    def _site_fn(self, layer: int) -> Any:
        where = f"capture() at layer {layer} ({self.sites[layer]})"

        def fn(hidden: torch.Tensor) -> torch.Tensor:  # hidden: (n_rows, n_cols, d_model)
            self._tracker.current(hidden, where)
            s = self._open
            if s is None or s.select is None:
                return hidden
            j0, take = s.select
            if take.shape[1] == 1:
                s.pools[layer].push_step(hidden[:, j0], take[:, 0])
            else:
                rows, cols = take.nonzero(as_tuple=True)
                if rows.numel():
                    s.pools[layer].push_rows(hidden[rows, cols + j0], rows)
            return hidden

        return fn

    # -- results -------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True inside the ``with`` block."""
        return self._tracker is not None

    def mark(self) -> int:
        """Close the open set and return the number of sets so far (an index for :meth:`merge_results`)."""
        self.on_set_end()
        return len(self._done)

    def _snapshot(self) -> list[_Done]:
        done = list(self._done)
        s = self._open
        if s is not None:
            first = next(iter(s.pools.values()))
            done.append(_Done({layer: p.result() for layer, p in s.pools.items()}, first.counts()))
        return done

    @property
    def results(self) -> list[dict[int, np.ndarray]]:
        """One ``{layer: (n_seq, d_sae) float32}`` per set (generate call or fresh forward), in order."""
        return [d.pooled for d in self._snapshot()]

    def result(self) -> dict[int, np.ndarray]:
        """``{layer: (n_seq, d_sae) float32}``: every set's rows, concatenated in call order.

        A sequence with no pooled position gives a row of zeros.
        """
        done = self._snapshot()
        return {layer: (np.concatenate([d.pooled[layer] for d in done]) if done else
                        np.zeros((0, sae.d_sae), np.float32)) for layer, sae in self.saes.items()}

    def counts(self) -> np.ndarray:
        """(n_seq,) int64: positions pooled per sequence, in the row order of :meth:`result`."""
        done = self._snapshot()
        return np.concatenate([d.counts for d in done]) if done else np.zeros(0, np.int64)

    def take(self) -> dict[int, np.ndarray]:
        """:meth:`result`, then forget it (and close the open set): for streaming over many batches."""
        self.on_set_end()
        out = self.result()
        self._done.clear()
        return out

    def merge_results(self, start: int, order: np.ndarray) -> None:
        """Replace ``results[start:]`` by one set whose row ``r`` is their concatenated row ``order[r]``.

        ``corrsteer.method.generation.generate`` uses it to put the rows of its length-sorted
        batches back into prompt order.
        """
        if not 0 <= start <= self.mark():
            raise ValueError(f"start={start} is not a mark of this capture (it holds {len(self._done)} sets); "
                             "was take() called in between?")
        tail = self._done[start:]
        if not tail:
            return
        order = np.asarray(order, dtype=np.int64)
        pooled = {layer: np.concatenate([d.pooled[layer] for d in tail])[order] for layer in self.saes}
        counts = np.concatenate([d.counts for d in tail])[order]
        del self._done[start:]
        self._done.append(_Done(pooled, counts))


def capture(model: torch.nn.Module, saes: Any, pool: str = "max", positions: str = "generation",
            backend: str = "auto") -> Capture:
    """Pool SAE activations per sequence over the generation positions while the block runs.

    Args:
        model: a transformers causal LM (or its base model).
        saes: ``{layer: SAE}`` or a sequence of SAEs (each with ``.layer`` set); each
            is read at its own site (``sae.site``). SAELens SAEs are converted
            (:meth:`corrsteer.SAE.from_sae_lens`).
        pool: ``"max"`` or ``"mean"`` over positions (METHOD.md §3).
        positions: ``"generation"`` or ``"all"`` (every non-padding position).
        backend: ``"core"`` (the C core's streaming :class:`corrsteer.core.Pooler` on the CPU),
            ``"torch"`` (encode and pool in torch on the model's device) or ``"auto"``
            (torch when the model is on a GPU, else core).

    Returns:
        A :class:`Capture`; after the block ``cap.result()`` gives
        ``{layer: (n_seq, d_sae) float32}``, one row per sequence of every ``generate``
        call (or top-level forward) in call order; ``cap.results`` one dict per call.
    """
    return Capture(model, saes, pool=pool, positions=positions, backend=backend)


def _parse_saes(saes: Any, n_layers: int, width: int) -> dict[int, Any]:
    """``{layer: SAE}`` from a mapping or a sequence of SAEs (corrsteer or SAELens), every one checked."""
    saes = as_saes(saes)
    if isinstance(saes, Mapping):
        items = list(saes.items())
    elif isinstance(saes, Sequence) and not isinstance(saes, (str, bytes)):
        items = []
        for i, sae in enumerate(saes):
            if getattr(sae, "layer", None) is None:
                raise ValueError(f"saes[{i}] has no .layer; pass {{layer: sae}} instead of a list")
            items.append((sae.layer, sae))
    else:
        raise TypeError(f"saes must be a {{layer: SAE}} mapping or a list of SAEs, got {type(saes).__name__}")
    if not items:
        raise ValueError("saes is empty; give at least one SAE to capture")
    out: dict[int, Any] = {}
    for layer, sae in items:
        what = f"the SAE for layer {layer}"
        for name in ("W_enc", "b_enc", "b_dec", "d_in", "d_sae", "architecture"):
            if not hasattr(sae, name):
                raise TypeError(f"{what} is a {type(sae).__name__} without .{name}; pass a corrsteer.SAE")
        layer = check_layer(layer, n_layers, what)
        if getattr(sae, "layer", None) is not None and int(sae.layer) != layer:
            raise ValueError(f"{what} says it reads layer {sae.layer} ({getattr(sae, 'hook_name', None)}); "
                             "key it by its own layer")
        check_site(getattr(sae, "site", "resid_post") or "resid_post", what)
        if int(sae.d_in) != width:
            raise ValueError(f"{what} has d_in={sae.d_in} but the model has d_model={width}; "
                             "load the SAE trained for this model")
        if layer in out:
            raise ValueError(f"two SAEs for layer {layer}; capture one SAE per layer")
        out[layer] = sae
    return out
