"""Batched greedy generation with per-sequence stops, returning ``Generation`` records.

``generate`` sorts the prompts by token length (less padding), runs ``model.generate``
greedily on left-padded batches and gives the records back in prompt order. Each
sequence stops on its own at EOS or at the first stop string; its completion is the
text before that stop string. It works inside ``steer`` and ``capture`` contexts: with
``capture=cap`` each record carries its pooled activations and ``cap.result()`` rows
are in prompt order.

Counting: ``n_new_tokens`` is the number of generated tokens up to and including the
one that ended the sequence (EOS, or the token that completed a stop string), which
is also the number of generation positions that ``capture`` pools for it.

Example:
    >>> model, tok = corrsteer.models.load_model("gemma-3-270m")             # doctest: +SKIP
    >>> gens = generate(model, tok, ["The capital of France is", "Water boils at"], 8,
    ...                 stop_strings=["\\n"])                                  # doctest: +SKIP
    >>> gens[1].completion, gens[1].n_new_tokens, gens[1].finished_by         # doctest: +SKIP
    (' 100 degrees Celsius.', 8, 'stop')
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria

from corrsteer.errors import CorrsteerError
from corrsteer.hooks.capture import Capture

log = logging.getLogger(__name__)

FINISH_REASONS = ("eos", "stop", "length")


@dataclass
class Generation:
    """One prompt's greedy completion."""

    prompt: str  # the prompt as given
    completion: str  # generated text (special tokens dropped), cut before the first stop string
    n_prompt_tokens: int  # prompt tokens, padding excluded
    n_new_tokens: int  # generated tokens up to and including the one that ended the sequence
    finished_by: str  # "eos" | "stop" | "length"
    activations: dict[int, np.ndarray] | None = field(default=None, repr=False)  # layer -> (d_sae,) pooled


class StopOnStrings(StoppingCriteria):
    """Finishes a row when the text it generated (prompt excluded) contains a stop string.

    Only the last ``window`` generated tokens are decoded at each step (a stop string of
    ``m`` characters spans at most ``m`` tokens), so a step costs O(batch) decodes.
    ``stopped_at[row]`` is the number of generated tokens when the row stopped.
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.prompt_width = prompt_width
        self.window = max(len(s) for s in self.stop_strings) + 8
        self.stopped_at: dict[int, int] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        n_new = input_ids.shape[1] - self.prompt_width
        tails = input_ids[:, max(self.prompt_width, input_ids.shape[1] - self.window):].tolist()
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        for row, tail in enumerate(tails):
            if row not in self.stopped_at:
                text = self.tokenizer.decode(tail, skip_special_tokens=True)
                if any(s in text for s in self.stop_strings):
                    self.stopped_at[row] = n_new
            done[row] = row in self.stopped_at
        return done.to(input_ids.device)


def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
             stop_strings: Sequence[str] | str = (), batch_size: int = 16, progress: bool = False,
             capture: Capture | None = None,
             on_batch: Callable[[list[int], list[Generation]], None] | None = None,
             on_batch_start: Callable[[list[int]], None] | None = None) -> list[Generation]:
    """Greedy completions of ``prompts``, batched, in prompt order.

    Args:
        model: a transformers causal LM.
        tokenizer: its tokenizer; needs a pad token. A prompt that starts with the
            BOS token's text (chat templates) is not given a second BOS.
        prompts: the prompts (n_seq strings).
        max_new_tokens: most tokens generated per prompt.
        stop_strings: a sequence stops at the first of these in its generated text.
        batch_size: prompts per ``model.generate`` call.
        progress: show a tqdm bar over batches.
        capture: an active ``capture(model, ...)`` context; each record then gets its
            pooled activations and, afterwards, ``capture.result()`` has one row per
            prompt, in prompt order (replacing the per-batch entries).
        on_batch: called after each batch with the batch's prompt indices and records
            (records carry ``activations`` when ``capture`` is given; do not call
            ``capture.take()`` from it).
        on_batch_start: called before each batch with its prompt indices, in the order
            of the batch's rows (e.g. to give a per-row ``steer`` its rows with ``assign``).

    Returns:
        One :class:`Generation` per prompt, in the order of ``prompts``.

    Raises:
        ValueError / TypeError: bad arguments (the message names the argument).
    """
    prompts, stops = _check_args(model, tokenizer, prompts, max_new_tokens, stop_strings, batch_size, capture)
    if not prompts:
        return []
    eos = _eos_ids(model, tokenizer)
    bos = tokenizer.bos_token
    texts = [p[len(bos):] if bos and p.startswith(bos) else p for p in prompts]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # stable: equal lengths keep prompt order
    device = next(iter(model.parameters()), torch.empty(0)).device
    start = capture.mark() if capture is not None else 0
    out: list[Generation | None] = [None] * len(prompts)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for idx in tqdm(batches, desc="generate", unit="batch", disable=not progress):
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, padding_side="left")
        width = enc["input_ids"].shape[1]
        criterion = StopOnStrings(tokenizer, stops, width) if stops else None
        before = capture.mark() if capture is not None else 0
        if on_batch_start is not None:
            on_batch_start(list(idx))
        with torch.no_grad():
            seqs = model.generate(input_ids=enc["input_ids"].to(device),
                                  attention_mask=enc["attention_mask"].to(device),
                                  max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos) or None,
                                  stopping_criteria=[criterion] if criterion else None)
        new = seqs[:, width:].tolist()
        pooled = None
        if capture is not None:
            if capture.mark() != before + 1:
                raise CorrsteerError(f"capture saw {capture.mark() - before} generation calls for one batch; "
                                     "is the capture() context active on this model?")
            pooled = capture.results[-1]
        batch = []
        for row, i in enumerate(idx):
            stopped = None if criterion is None else criterion.stopped_at.get(row)
            gen = _record(prompts[i], lengths[i], new[row], stopped, eos, stops, tokenizer)
            if pooled is not None:
                gen.activations = {layer: z[row] for layer, z in pooled.items()}
            out[i] = gen
            batch.append(gen)
        log.debug("generated %d sequences of up to %d tokens (prompt width %d)", len(idx), max_new_tokens, width)
        if on_batch is not None:
            on_batch(list(idx), batch)
    if capture is not None:
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[np.asarray(order)] = np.arange(len(order))
        capture.merge_results(start, inverse)
    return [g for g in out if g is not None]


def _record(prompt: str, n_prompt: int, new: list[int], stopped: int | None, eos: set[int],
            stops: tuple[str, ...], tokenizer: Any) -> Generation:
    """Turn one row's generated ids into a :class:`Generation`."""
    eos_at = next((j for j, t in enumerate(new) if t in eos), None)
    if stopped is not None and (eos_at is None or stopped - 1 < eos_at):
        n_new, reason = stopped, "stop"
    elif eos_at is not None:
        n_new, reason = eos_at + 1, "eos"
    else:
        n_new, reason = len(new), "length"
    text = tokenizer.decode(new[:n_new], skip_special_tokens=True)
    cuts = [k for k in (text.find(s) for s in stops) if k >= 0]
    if cuts:
        text = text[:min(cuts)]
    return Generation(prompt, text, n_prompt, n_new, reason)


def _eos_ids(model: torch.nn.Module, tokenizer: Any) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _check_args(model: Any, tokenizer: Any, prompts: Any, max_new_tokens: Any, stop_strings: Any,
                batch_size: Any, capture: Any) -> tuple[list[str], tuple[str, ...]]:
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "generate"):
        raise TypeError(f"model must be a transformers causal LM, got {type(model).__name__}")
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p]
    if bad:
        raise ValueError(f"prompts[{bad[0]}] is {prompts[bad[0]]!r}; every prompt must be a non-empty string")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    stops = (stop_strings,) if isinstance(stop_strings, str) else tuple(stop_strings or ())
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop_strings must be non-empty strings, got {stops!r}")
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (load_model does)")
    if capture is not None and (not isinstance(capture, Capture) or capture.model is not model
                                or not capture.active):
        raise ValueError("capture must be an active capture(model, ...) context on the same model: "
                         "call generate inside `with capture(model, saes) as cap:` and pass capture=cap")
    return list(prompts), stops
