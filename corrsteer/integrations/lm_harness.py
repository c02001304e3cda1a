"""A ``corrsteer`` model type for lm-evaluation-harness: any lm-eval task, steered by a selection.

Importing this module registers the model ``corrsteer`` with lm-eval (``pip install
'corrsteer[lmeval]'``). lm-eval 0.4 discovers no third-party models by itself, so run it
through corrsteer, which imports this module first and then hands its arguments to
lm-eval's own command line::

    corrsteer lm-eval --model corrsteer \\
        --model_args pretrained=gemma-3-270m,selection=runs/sst2-all-seed0/selection,scale=1 \\
        --tasks sst2_local --include_path scripts/lm_eval_tasks --device cpu --batch_size 16

or, from Python, ``import corrsteer.integrations.lm_harness`` and then
``lm_eval.simple_evaluate(model="corrsteer", model_args=...)``.

Model args: ``pretrained`` (an embedded name, a folder, a ``.gguf`` or a hub id, loaded by
:func:`corrsteer.load_model`), ``selection`` (a selection folder) or ``vector`` (a llama.cpp
control vector), ``scale`` (default: the selection's own, 1 for a vector), ``positions``
(``generation``, the default, or ``all``), and lm-eval's ``device``, ``dtype``, ``batch_size``,
``max_batch_size``, ``max_length``, ``add_bos_token``, ``truncation``, ``softmax_dtype``.
Any other arg is refused. Without ``selection`` and ``vector`` the model runs unsteered,
exactly as lm-eval's ``hf`` model.

Which positions are steered (METHOD.md §2), with ``positions=generation``:

- **generate_until**: the positions whose outputs produce generated tokens, ``n-1 … n+T-2``
  for a prompt of ``n`` tokens (:func:`corrsteer.steer` during ``model.generate``);
- **loglikelihood** (and ``loglikelihood_rolling``): the continuation plays the generated
  text. For a context of ``n`` tokens and a continuation of ``T`` tokens, the steered
  positions are ``n-1 … n+T-2``: the context's last token and every continuation token but
  the last, i.e. exactly the positions whose logits score the continuation, the same
  positions a steered greedy generation of that continuation would have been steered at.
  No other context position is steered.

``positions=all`` steers every position of the input instead (as a llama.cpp control vector
does). The log-likelihood of a steered run is computed in this module (one forward per
batch, right-padded as lm-eval does); unsteered runs are lm-eval's own ``HFLM`` code.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from corrsteer.config import POSITIONS, check_choice
from corrsteer.hooks import steer
from corrsteer.method.features import Selection
from corrsteer.models import d_model, find_layers, load_model
from corrsteer.models.sites import attach

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("corrsteer's lm-evaluation-harness model needs lm-eval: pip install 'corrsteer[lmeval]' "
                      "(or: bash scripts/install_extras.sh lmeval)") from exc

log = logging.getLogger(__name__)

__all__ = ["CorrsteerLM", "MODEL_ARGS"]

# lm-eval's HFLM options that a corrsteer model passes through
_HF_ARGS = ("device", "dtype", "batch_size", "max_batch_size", "max_length", "add_bos_token", "truncation",
            "softmax_dtype")
MODEL_ARGS = ("pretrained", "selection", "vector", "scale", "positions") + _HF_ARGS


@register_model("corrsteer")
class CorrsteerLM(HFLM):
    """lm-eval's ``HFLM`` on a model loaded by corrsteer, steered by a selection or control vector."""

    def __init__(self, pretrained: str = "gemma-3-270m", selection: str | None = None, vector: str | None = None,
                 scale: float | None = None, positions: str = "generation", **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(_HF_ARGS))
        if unknown:
            raise ValueError(f"unknown model arg(s) {', '.join(unknown)} for --model corrsteer; the known args are "
                             f"{', '.join(MODEL_ARGS)}")
        self.positions = check_choice("positions", positions, POSITIONS)
        if selection and vector:
            raise ValueError("give selection=DIR or vector=FILE.gguf, not both")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
            raise ValueError(f"scale={scale!r} must be a number")
        sel = Selection.load(selection) if selection else Selection.from_gguf(vector) if vector else None
        model, tok = load_model(pretrained, device=kwargs.pop("device", None), dtype=kwargs.pop("dtype", None))
        if vector:
            sel = Selection.from_gguf(vector, d_model=d_model(model))
        super().__init__(pretrained=model, tokenizer=tok, backend="causal", **kwargs)
        self.selection = sel
        self.interventions = sel.interventions(scale) if sel is not None else []
        steer(model, self.interventions)  # checks every layer and vector width against the model, now
        if not self.interventions:
            log.warning("--model corrsteer without selection= or vector= (or a selection that steers nothing): "
                        "the model runs unsteered")
        log.info("corrsteer: steering layers %s at %s positions", [l for l, _, _ in self.interventions],
                 self.positions)

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records about the model, plus what steers it."""
        info = super().get_model_info()
        sel = self.selection
        info["corrsteer"] = {"positions": self.positions, "layers": [l for l, _, _ in self.interventions],
                             "method": None if sel is None else sel.method,
                             "features": [] if sel is None else [(f.layer, f.index, f.sign) for f in sel.features]}
        return info

    # ------------------------------------------------------------------ generate_until
    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **kwargs: Any) -> torch.Tensor:
        if not self.interventions:
            return super()._model_generate(context, max_length, stop, **kwargs)
        with steer(self.model, self.interventions, positions=self.positions):
            return super()._model_generate(context, max_length, stop, **kwargs)

    # ------------------------------------------------------------------- loglikelihood
    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        if not self.interventions:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        size = override_bs or (self.batch_size if isinstance(self.batch_size, int) and self.batch_size > 0 else 1)
        order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][1]) + len(requests[i][2])))
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            rows = [steered_span(requests[i][1], requests[i][2], self.max_length, self.positions) for i in batch]
            width = max(len(toks) for toks, _, _ in rows)
            inp = torch.zeros((len(rows), width), dtype=torch.long)  # right-padded with 0, as lm-eval pads
            mask = torch.zeros((len(rows), width), dtype=torch.bool)  # True = steered
            for r, (toks, first, _) in enumerate(rows):
                inp[r, :len(toks)] = torch.tensor(toks, dtype=torch.long)
                mask[r, first:len(toks)] = True
            with added_at(self.model, self.interventions, mask.to(self.device)):
                logp = F.log_softmax(self._model_call(inp.to(self.device)), dim=-1, dtype=self.softmax_dtype)
            for r, i in enumerate(batch):
                key, _, cont = requests[i]
                n_in, target = len(rows[r][0]), torch.tensor(cont, dtype=torch.long, device=logp.device)
                lp = logp[r, n_in - len(cont):n_in]  # (T, vocab): the logits that score the continuation
                answer = (float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
                out[i] = answer
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
        return out  # type: ignore[return-value]


def steered_span(context: list[int], continuation: list[int], max_length: int,
                 positions: str = "generation") -> tuple[list[int], int, int]:
    """The input row of one log-likelihood request and its steered columns ``[first, stop)``.

    The row is lm-eval's: ``(context + continuation)[-(max_length + 1):][:-1]`` (left-truncated).
    With ``positions="generation"`` the steered columns are those whose logits score the
    continuation: ``n-1 … n+T-2`` for ``n`` context and ``T`` continuation tokens (``first =
    len(row) - T``); with ``"all"`` every column of the row (``first = 0``).

    Returns:
        ``(row tokens, first steered column, stop = len(row))``.
    """
    if not continuation:
        raise ValueError("a log-likelihood request needs at least one continuation token")
    row = (list(context) + list(continuation))[-(max_length + 1):][:-1]
    first = len(row) - len(continuation) if positions == "generation" else 0
    return row, max(first, 0), len(row)


@contextlib.contextmanager
def added_at(model: torch.nn.Module, interventions: list[tuple[int, Any, str]], mask: torch.Tensor) -> Iterator[None]:
    """Add each ``(layer, vector, site)`` at the columns where ``mask`` (n_rows, n_cols) is True."""
    layers = find_layers(model)
    handles = []

    def adder(vec: Any) -> Any:
        v = torch.as_tensor(vec, dtype=torch.float32)

        def fn(hidden: torch.Tensor) -> torch.Tensor:  # (n_rows, n_cols, d_model)
            if hidden.shape[:2] != mask.shape:
                raise RuntimeError(f"steered forward has shape {tuple(hidden.shape[:2])}, the mask {tuple(mask.shape)}")
            add = v.to(device=hidden.device, dtype=hidden.dtype)
            return torch.where(mask[..., None], hidden + add, hidden)
        return fn

    try:
        for layer, vec, site in interventions:
            handles.append(attach(layers[layer], site, adder(vec), prepend=True))
        yield
    finally:
        for h in handles:
            h.remove()
