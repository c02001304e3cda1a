"""What steering costs in fluency: degenerate continuations, and the unsteered model's perplexity of them.

A steering vector strong enough to move a reward can also break the text. Two figures,
reported next to every steered condition:

- :func:`is_degenerate` (cheap, text only): a continuation is degenerate when it is empty,
  when one word makes up more than half of it (at least 4 words), or when a word 3-gram
  occurs twice or more (the loops a steered model falls into: "pizza pizza pizza",
  "and the and the and the"). :func:`degenerate_rate` is the share over records.
- :func:`unsteered_perplexity` (one forward pass per batch, no generation): the perplexity
  that the *unsteered* model assigns to the completion tokens, given their prompt. Fluent
  text the model would itself write scores low; garbage scores high. Only the completion's
  positions go through the LM head, so the 262k-word unembedding of Gemma runs on a few
  rows per sequence.

Example:
    >>> is_degenerate("a pizza and a bottle of wine"), is_degenerate("food food food food food")
    (False, True)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["degenerate_rate", "is_degenerate", "unsteered_perplexity"]

_WORD = re.compile(r"\w+", re.UNICODE)


def is_degenerate(text: str) -> bool:
    """True for an empty or repetitive continuation (see the module docstring)."""
    words = [w.lower() for w in _WORD.findall(text or "")]
    if not words:
        return True
    if len(words) >= 4 and Counter(words).most_common(1)[0][1] > len(words) / 2:
        return True
    trigrams = Counter(zip(words, words[1:], words[2:]))
    return bool(trigrams) and trigrams.most_common(1)[0][1] >= 2


def degenerate_rate(records: Sequence[Mapping[str, Any]]) -> float:
    """Share of records whose ``completion`` is degenerate (nan for no record)."""
    if not records:
        return float("nan")
    return sum(is_degenerate(str(r.get("completion", ""))) for r in records) / len(records)


def unsteered_perplexity(model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str],
                         batch_size: int = 16) -> float:
    """exp(mean negative log-likelihood) of the completion tokens under the (unsteered) model.

    Args:
        model, tokenizer: the causal LM, run without hooks (call outside ``steer``).
        prompts, completions: one completion per prompt; empty completions are skipped.
        batch_size: sequences per forward pass.

    Returns:
        The perplexity over every completion token of every non-empty completion (nan if none).
    """
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions; give one completion each")
    pairs = [(p, c) for p, c in zip(prompts, completions) if c]
    device = next(iter(model.parameters())).device
    nll, count = 0.0, 0
    body = getattr(model, "model", None)
    head = model.get_output_embeddings()
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        prompt_ids = [tokenizer(p)["input_ids"] for p, _ in chunk]
        full_ids = [tokenizer(p + c)["input_ids"] for p, c in chunk]
        width = max(len(ids) for ids in full_ids)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(full_ids):  # left padding, as everywhere in corrsteer
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        with torch.inference_mode():
            if body is not None and head is not None:
                hidden = body(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            else:  # a model without the usual body/head split: full logits
                hidden = None
                logits_all = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for i, (p_ids, f_ids) in enumerate(zip(prompt_ids, full_ids)):
                n_prompt = min(len(p_ids), len(f_ids) - 1)  # the prompt's tokens as the full text splits them
                cols = torch.arange(width - len(f_ids) + n_prompt - 1, width - 1, device=device)
                targets = ids[i, cols + 1].to(device)
                if hidden is not None:
                    logits = head(hidden[i, cols]).float()
                    cap = getattr(model.config, "final_logit_softcapping", None)
                    if cap:  # Gemma caps its logits; the loss of the model is computed on the capped ones
                        logits = torch.tanh(logits / cap) * cap
                else:
                    logits = logits_all[i, cols].float()
                logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])
                nll -= float(logp.sum())
                count += len(cols)
    return math.exp(nll / count) if count else float("nan")
