"""Which columns of each forward call are generation positions (METHOD.md §2).

``capture`` and ``steer`` must act on exactly the positions ``n-1 … n+T-2`` of every
sequence (prompt of ``n`` tokens, ``T`` generated), whatever the KV cache, the batch
or the left padding. Inside a layer hook only the current hidden states are visible,
so one ``PositionTracker`` per model reads every call of the model and says, for the
columns of that call, where they sit.

Everything is counted in **absolute columns** of the left-padded batch: column ``c``
of a batch whose prompts are padded to width ``W`` holds, for every row, the same
step of generation. The last prompt token of every row sits at column ``W-1``, so the
generation positions are the columns ``c >= W-1`` (``first_gen``), the same for all
rows; padding columns are those where the attention mask is 0.

How a call is placed:

- ``model.generate`` is wrapped while a tracker is attached: each call starts a new
  *set* of sequences whose prompt width ``W`` is the width of the ``input_ids`` (or of
  the attention mask, when a cache is continued). Every forward inside that call
  belongs to the set, with or without the KV cache.
- A forward outside ``generate`` with no cache, or an empty one, also starts a new
  set, the whole input being the prompt: ``positions="generation"`` then means its
  last column only. A forward that continues a non-empty cache belongs to the set
  before it (a hand-written decoding loop).
- The columns of a call are ``past … past + n_cols - 1`` with ``past`` = the attention
  mask's width minus the call's width (or the cache length when there is no mask).
- Where a sequence ends (for pooling, not for steering): the column of a generated
  EOS token, or of the token after which a stopping criterion (stop strings included)
  marked the row finished. The position that *produced* that token still counts;
  the token's own column and later ones do not (``end``).

Batches must be left-padded (a right-padded batch raises ``ValueError``), the
attention mask must be 2-D (static caches that pass 4-D masks are refused with a
``CorrsteerError``), and chunked prefill is not supported.
"""

from __future__ import annotations

import copy
import functools
import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, StopStringCriteria

from corrsteer.errors import CorrsteerError

log = logging.getLogger(__name__)

_NO_END = torch.iinfo(torch.int64).max


@dataclass
class Call:
    """Where the columns of the forward call now running sit.

    Attributes:
        set_id: increases by one with every new set of sequences.
        n_rows: batch size of the call.
        n_cols: number of columns in the call (1 for a cached decoding step).
        past: absolute column of the call's first column.
        first_gen: absolute column of the last prompt token (``W-1``).
        valid: (n_rows, n_cols) bool, False at padding; None when every column is valid.
        end: (n_rows,) int64 absolute column from which a row no longer counts
            (``_NO_END`` while it runs).
    """

    set_id: int
    n_rows: int
    n_cols: int
    past: int
    first_gen: int
    valid: torch.Tensor | None
    end: torch.Tensor


class Listener(Protocol):
    """What a tracker tells the contexts attached to it (capture implements it)."""

    def on_call(self, call: Call) -> None: ...

    def on_set_end(self) -> None: ...


class PositionTracker:
    """Reads every call of ``model`` and keeps the position state of the current set.

    Use :func:`acquire` / :func:`release`: one tracker per model, shared by every
    ``capture`` and ``steer`` context active on it.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.users = 0
        self.listeners: list[Listener] = []
        self.call: Call | None = None
        self._set_id = 0
        self._first_gen = 0
        self._end: torch.Tensor | None = None
        self._eos: torch.Tensor | None = None
        self._in_generate = False
        self._pending_width: int | None = None
        self._handles: list[Any] = []
        self._saved_generate: Any = None
        self._had_own_generate = False

    # -- install / remove ---------------------------------------------------------------

    def install(self) -> None:
        """Register the model-level hooks and wrap ``model.generate``."""
        model = self.model
        self._handles.append(model.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        self._handles.append(model.register_forward_hook(self._post_hook, with_kwargs=True,
                                                         always_call=True))
        if hasattr(model, "generate"):
            self._had_own_generate = "generate" in model.__dict__
            self._saved_generate = model.generate

            @functools.wraps(self._saved_generate)
            def generate(*args: Any, **kwargs: Any) -> Any:
                return self._generate(*args, **kwargs)

            model.__dict__["generate"] = generate

    def remove(self) -> None:
        """Undo :meth:`install` (safe to call twice)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._saved_generate is not None:
            if self._had_own_generate:
                self.model.__dict__["generate"] = self._saved_generate
            else:
                self.model.__dict__.pop("generate", None)
            self._saved_generate = None
        self.call = None

    # -- state read by the layer hooks ---------------------------------------------------

    def current(self, hidden: torch.Tensor, where: str) -> Call:
        """The running call, checked against the hidden states a layer hook received.

        Raises:
            CorrsteerError: the layer ran outside a call of the hooked model, or with
                a batch/sequence shape that is not the call's.
        """
        call = self.call
        if call is None:
            raise CorrsteerError(f"{where} ran outside a forward of the model given to capture()/steer(); "
                                 f"call that model (or its generate), not one of its submodules")
        if hidden.ndim != 3 or hidden.shape[0] != call.n_rows or hidden.shape[1] != call.n_cols:
            raise CorrsteerError(f"{where} received hidden states of shape {tuple(hidden.shape)} but the model "
                                 f"was called with {call.n_rows} rows of {call.n_cols} tokens; "
                                 f"capture()/steer() support (batch, seq, d_model) decoder layers only")
        return call

    # -- hooks ---------------------------------------------------------------------------

    def _pre_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args and torch.is_tensor(args[0]):
            ids = args[0]
        ref = ids if ids is not None else kwargs.get("inputs_embeds")
        if ref is None:
            raise CorrsteerError("capture()/steer() could not find input_ids or inputs_embeds in the "
                                 "model call; pass them as keyword arguments")
        n_rows, n_cols = int(ref.shape[0]), int(ref.shape[1])
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and torch.is_tensor(args[1]):
            mask = args[1]
        if mask is not None and (not torch.is_tensor(mask) or mask.ndim != 2):
            raise CorrsteerError("capture()/steer() need a 2-D attention mask, got "
                                 f"{type(mask).__name__} {tuple(getattr(mask, 'shape', ()))}; "
                                 "use the default dynamic cache (no cache_implementation='static')")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        seen = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
        total = int(mask.shape[1]) if mask is not None else seen + n_cols
        past = total - n_cols
        if past < 0:
            raise CorrsteerError(f"the attention mask has {total} columns but the call has {n_cols} tokens")
        if self._pending_width is not None:
            self._start_set(max(self._pending_width, total), mask, n_rows, ref.device)
            self._pending_width = None
        elif not self._in_generate and seen == 0:
            self._start_set(total, mask, n_rows, ref.device)
        elif self._end is None or self._end.shape[0] != n_rows:
            raise CorrsteerError(f"a call with {n_rows} rows continues a cache, but the current set of "
                                 f"sequences has {0 if self._end is None else self._end.shape[0]} rows")
        valid = None
        if mask is not None and past < self._first_gen + 1:  # generated columns are always attended
            valid = mask[:, past:].bool()
        if ids is not None and self._eos is not None and self.listeners and past + n_cols > self._first_gen + 1:
            cols = torch.arange(past, past + n_cols, device=ids.device)
            hit = torch.isin(ids, self._eos) & (cols > self._first_gen)
            first = torch.where(hit, cols, _NO_END).amin(dim=1)
            self._end = torch.minimum(self._end, first)
        self.call = Call(self._set_id, n_rows, n_cols, past, self._first_gen, valid, self._end)
        for listener in self.listeners:
            listener.on_call(self.call)

    def _post_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.call = None

    def _start_set(self, width: int, mask: torch.Tensor | None, n_rows: int, device: torch.device) -> None:
        if mask is not None and mask.shape[1] >= width and not bool(mask[:, width - 1].bool().all()):
            raise ValueError("capture()/steer() need left-padded batches, but the last prompt column is "
                             "padding in some row (right padding or an empty prompt); set "
                             "tokenizer.padding_side = 'left'")
        for listener in self.listeners:
            listener.on_set_end()
        self._set_id += 1
        self._first_gen = width - 1
        self._end = torch.full((n_rows,), _NO_END, dtype=torch.int64, device=device)
        if not self._in_generate:
            self._eos = _eos_tensor(getattr(getattr(self.model, "generation_config", None), "eos_token_id", None),
                                    device)
        elif self._eos is not None:
            self._eos = self._eos.to(device)

    def mark_finished(self, done: torch.Tensor, column: int) -> None:
        """Rows where ``done`` stop counting from absolute ``column`` (the token just generated)."""
        if self._end is None:
            return
        done = done.to(self._end.device).bool()
        self._end = torch.where(done, torch.clamp(self._end, max=column), self._end)

    # -- generate ------------------------------------------------------------------------

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        original = self._saved_generate
        if self._in_generate:  # generate called from inside generate (assistants): no new set
            return original(*args, **kwargs)
        config = kwargs.get("generation_config") or getattr(self.model, "generation_config", None)
        if getattr(config, "prefill_chunk_size", None) or kwargs.get("prefill_chunk_size"):
            raise ValueError("capture()/steer() do not support chunked prefill (prefill_chunk_size); unset it")
        kwargs = self._observe_stopping(kwargs, config)
        eos = kwargs.get("eos_token_id", getattr(config, "eos_token_id", None))
        self._eos = _eos_tensor(eos, None)
        self._pending_width = _prompt_width(args, kwargs)
        self._in_generate = True
        try:
            return original(*args, **kwargs)
        finally:
            self._in_generate = False
            self._pending_width = None
            for listener in self.listeners:
                listener.on_set_end()

    def _observe_stopping(self, kwargs: dict, config: Any) -> dict:
        """Route the stopping criteria (stop strings included) through an observer."""
        criteria = list(kwargs.pop("stopping_criteria", None) or [])
        stop = kwargs.pop("stop_strings", None)
        if stop is None and getattr(config, "stop_strings", None):
            stop = config.stop_strings
            config = copy.deepcopy(config)
            config.stop_strings = None
            kwargs["generation_config"] = config
        if stop:
            tokenizer = kwargs.get("tokenizer")
            if tokenizer is None:
                raise ValueError("generate(stop_strings=...) needs tokenizer=... as well")
            criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop))
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_Observer(self, criteria)])
        return kwargs


class _Observer(StoppingCriteria):
    """Runs the caller's stopping criteria and tells the tracker which rows they finished."""

    def __init__(self, tracker: PositionTracker, criteria: list[Any]) -> None:
        self.tracker = tracker
        self.criteria = criteria

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self.criteria:
            done = done | criterion(input_ids, scores, **kwargs)
        self.tracker.mark_finished(done, input_ids.shape[1] - 1)
        return done


def _prompt_width(args: tuple, kwargs: dict) -> int | None:
    """Padded prompt width of a generate call (the attention mask's, when a cache is continued)."""
    widths = []
    for value in (args[0] if args else None, kwargs.get("input_ids"), kwargs.get("inputs"),
                  kwargs.get("inputs_embeds"), kwargs.get("attention_mask")):
        if torch.is_tensor(value) and value.ndim >= 2:
            widths.append(int(value.shape[1]))
    return max(widths) if widths else None


def _eos_tensor(eos: Any, device: torch.device | None) -> torch.Tensor | None:
    if eos is None:
        return None
    values = eos.flatten().tolist() if torch.is_tensor(eos) else ([eos] if isinstance(eos, int) else list(eos))
    return torch.tensor([int(v) for v in values], dtype=torch.long, device=device) if values else None


_TRACKERS: weakref.WeakKeyDictionary[torch.nn.Module, PositionTracker] = weakref.WeakKeyDictionary()


def acquire(model: torch.nn.Module) -> PositionTracker:
    """The model's tracker, installed on first use; pair every call with :func:`release`."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a transformers model), got {type(model).__name__}")
    tracker = _TRACKERS.get(model)
    if tracker is None:
        tracker = PositionTracker(model)
        tracker.install()
        _TRACKERS[model] = tracker
    tracker.users += 1
    return tracker


def release(tracker: PositionTracker) -> None:
    """Drop one user; the last one removes the tracker's hooks and the generate wrapper."""
    tracker.users -= 1
    if tracker.users <= 0:
        tracker.remove()
        _TRACKERS.pop(tracker.model, None)
        log.debug("position tracker removed from %s", type(tracker.model).__name__)


class TrackedHooks:
    """Base of ``capture()`` and ``steer()``: site hooks held together with a lease on the
    model's :class:`PositionTracker`, installed and removed as one.

    Subclasses set ``self.model`` (and ``self._handles = []``, ``self._tracker = None``)
    in ``__init__``, and call :meth:`_install` from ``__enter__`` and :meth:`_remove`
    from ``__exit__``.
    """

    model: torch.nn.Module
    _handles: list[Any]
    _tracker: PositionTracker | None

    def _install(self, make_handles: Callable[[], Iterable[Any]], listen: bool, what: str) -> None:
        """Acquire the tracker (and listen to it if ``listen``), then register ``make_handles()``.

        On any error everything acquired so far is released before re-raising.
        """
        if self._tracker is not None:
            raise RuntimeError(f"this {what} context is already active; create a new one to nest")
        self._tracker = acquire(self.model)
        try:
            if listen:
                self._tracker.listeners.append(self)
            for handle in make_handles():
                self._handles.append(handle)
        except BaseException:
            self._remove()
            raise

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            if self in tracker.listeners:
                tracker.listeners.remove(self)
            release(tracker)
