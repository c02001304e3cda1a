"""Residual-stream activations for SAE training: text sources and the harvest loop.

The site of layer ``l`` is ``resid_post``, the output of decoder layer ``l``, which
transformers returns as ``hidden_states[l + 1]`` (METHOD.md §1). Harvesting reads it with a
forward hook on the layer (so the last layer gives its raw output, not the final-norm'd
``hidden_states[-1]``) and stops the forward pass after the deepest requested layer:
the remaining layers and the LM head (for Gemma 3 270M the 262k-word unembedding is more
than half the compute) never run. Harvesting keeps every
real token of every text except BOS, the text's first position and padding, in float32,
until ``max_tokens`` rows per layer are collected. The first position is the attention
sink: Gemma puts BOS there, with a residual norm tens of times the others, and SmolLM2,
which has no BOS, puts its first word there, with a norm of ~22,700 against ~150 from
layer 12 on (one dimension holds 98% of the variance). Kept, it dominates an SAE's
loss: SmolLM2's SAEs came out with EV 0.999 and 97% dead latents.

Text sources (``load_texts``):

- a list of strings (task prompts, documents),
- a ``.txt`` file (one document per non-empty line) or a ``.jsonl`` file (the ``text``
  field of each object, or the first string field when there is none),
- the model's own samples (``sample_texts``: sampled from BOS with a fixed seed).

Example:
    >>> acts = harvest(model, tokenizer, ["The cat sat."], layers=[3], max_tokens=1000)  # doctest: +SKIP
    >>> acts[3].shape
    (4, 640)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from corrsteer.models.sites import read_sites
from corrsteer.models.layers import find_layers

logger = logging.getLogger(__name__)


def load_texts(source: str | os.PathLike | Sequence[str], *, limit: int | None = None) -> list[str]:
    """Read texts from a list, a ``.txt`` file (one per line) or a ``.jsonl`` file.

    Args:
        source: a sequence of strings, or a path.
        limit: keep at most this many texts.

    Returns:
        The non-empty texts, in order.
    """
    if isinstance(source, (str, os.PathLike)) and not (isinstance(source, str) and "\n" in source):
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"text source {str(p)!r} is not a file; pass a list of "
                                    f"strings, a .txt file (one text per line) or a .jsonl file")
        texts: list[str] = []
        with p.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                line = line.strip()
                if not line:
                    continue
                if p.suffix == ".jsonl":
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{p}:{i + 1}: not valid JSON ({exc})") from exc
                    line = _text_field(obj, f"{p}:{i + 1}")
                texts.append(line)
                if limit is not None and len(texts) >= limit:
                    break
        return texts
    if isinstance(source, str):
        raise TypeError("source is a single string with newlines; pass a list of strings")
    texts = [t for t in source if isinstance(t, str) and t.strip()]
    if len(texts) != len(source):
        bad = [type(t).__name__ for t in source if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings, found {sorted(set(bad))}")
    return texts[:limit] if limit is not None else texts


def _text_field(obj: Any, where: str) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        if isinstance(obj.get("text"), str):
            return obj["text"]
        for v in obj.values():
            if isinstance(v, str):
                return v
    raise ValueError(f"{where}: no 'text' field (or any string field) in {str(obj)[:80]!r}")


@torch.no_grad()
def sample_texts(model: Any, tokenizer: Any, n: int, *, max_new_tokens: int = 96, seed: int = 0,
                 batch_size: int = 16, temperature: float = 1.0, progress: bool = True) -> list[str]:
    """Sample ``n`` texts from the model, each started from BOS alone, with a fixed seed.

    Args:
        model, tokenizer: a causal LM and its tokenizer (needs ``bos_token_id``).
        n: number of texts.
        max_new_tokens: tokens per text.
        seed: seeds torch's generator before each batch (batch ``i`` uses ``seed + i``).
        batch_size: sequences per ``generate`` call.
        temperature: sampling temperature (full distribution, no top-k/top-p).
        progress: show a tqdm bar.

    Returns:
        ``n`` decoded texts (special tokens dropped).
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the tokenizer has no bos_token_id; sample_texts starts every text "
                         "from BOS, so pass texts instead")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = []
    for i, start in enumerate(tqdm(range(0, n, batch_size), desc="sampling texts",
                                   disable=not progress)):
        m = min(batch_size, n - start)
        torch.manual_seed(seed + i)
        ids = torch.full((m, 1), bos, dtype=torch.long, device=device)
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=temperature, top_k=0, top_p=1.0,
                             max_new_tokens=max_new_tokens, pad_token_id=pad)
        out.extend(tokenizer.batch_decode(gen[:, 1:], skip_special_tokens=True))
    return [t for t in out if t.strip()]


@torch.no_grad()
def harvest(model: Any, tokenizer: Any, texts: Sequence[str], layers: Sequence[int],
            max_tokens: int = 200_000, *, batch_size: int = 8, max_length: int = 128,
            drop_bos: bool = True, drop_first: bool = True, progress: bool = True) -> dict[int, np.ndarray]:
    """Collect residual activations at ``resid_post`` of ``layers`` over ``texts``.

    Args:
        model, tokenizer: a causal LM returning ``hidden_states`` and its tokenizer.
        texts: the documents (see ``load_texts``); each is truncated to ``max_length``
            tokens.
        layers: decoder layer indices (0-based); layer ``l`` reads ``hidden_states[l + 1]``.
        max_tokens: stop after this many kept tokens per layer.
        batch_size: texts per forward pass.
        max_length: tokens per text, BOS included.
        drop_bos: drop positions holding the BOS token (and always padding).
        drop_first: drop each text's first real position (the attention sink; see above).
        progress: show a tqdm bar over tokens.

    Returns:
        ``{layer: (n_tok, d_model) float32}``, rows in text order, identical ``n_tok`` for
        every layer.
    """

    blocks = find_layers(model)
    layers = [int(l) for l in layers]
    if not layers:
        raise ValueError("layers is empty; pass the decoder layer indices to harvest")
    bad = [l for l in layers if not 0 <= l < len(blocks)]
    if bad:
        raise ValueError(f"layers {bad} out of range for a model with {len(blocks)} decoder layers")
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty; nothing to harvest")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    bos_id = tokenizer.bos_token_id
    bufs: dict[int, np.ndarray] = {}
    keys = [(l, "resid_post") for l in sorted(set(layers))]
    filled = 0
    bar = tqdm(total=max_tokens, desc="harvesting activations", unit="tok", disable=not progress)
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                            truncation=True, max_length=max_length)
            ids = enc["input_ids"].to(device)
            attn = enc["attention_mask"].to(device)
            seen = read_sites(model, blocks, keys, input_ids=ids, attention_mask=attn)
            keep = attn.bool()
            if pad_id is not None and pad_id != bos_id:
                keep &= ids != pad_id
            if drop_bos and bos_id is not None:
                keep &= ids != bos_id
            if drop_first:  # the first attended position of each row, whatever the padding side
                first = attn.long().argmax(dim=1)
                keep[torch.arange(keep.shape[0], device=keep.device), first] = False
            n_new = min(int(keep.sum()), max_tokens - filled)
            if n_new <= 0:
                continue
            for l in layers:
                h = seen[(l, "resid_post")][keep][:n_new]
                if l not in bufs:
                    bufs[l] = np.empty((max_tokens, h.shape[-1]), dtype=np.float32)
                bufs[l][filled:filled + n_new] = h.float().cpu().numpy()
            filled += n_new
            bar.update(n_new)
            if filled >= max_tokens:
                break
    finally:
        bar.close()
    if filled == 0:
        raise ValueError("no tokens were kept: every text is empty after dropping BOS/padding")
    if filled < max_tokens:
        logger.info("harvest: %d tokens collected (max_tokens=%d); the texts ran out", filled,
                    max_tokens)
    return {l: np.ascontiguousarray(b[:filled]) for l, b in bufs.items()}
