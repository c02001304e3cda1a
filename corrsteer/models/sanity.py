"""A quick numerical check that a loaded model is sane: a fact and a perplexity.

:func:`sanity_check` greedily completes a two-shot factual prompt (the answer must
contain "Paris") and measures the perplexity of a fixed paragraph (it must stay below a
bound). A broken GGUF conversion, a wrong dtype or a scrambled tokenizer fails both.
Values measured on CPU, float32, transformers 5.24.0 are in ``tests/test_models_embedded.py``.

Example:
    >>> from corrsteer.models import load_model, sanity_check
    >>> model, tok = load_model("gemma-3-270m")          # doctest: +SKIP
    >>> sanity_check(model, tok)["ok"]                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

logger = logging.getLogger(__name__)

FACT_PROMPT = "Q: What is the capital of Italy? A: Rome\nQ: What is the capital of France? A:"
FACT_ANSWER = "Paris"
PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital and most populous "
    "city of France. The city has a population of over two million residents."
)


def _device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def greedy_completion(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 8) -> str:
    """Greedy continuation of one prompt (special tokens stripped).

    Args:
        model: a causal LM.
        tokenizer: its tokenizer.
        prompt: the text to continue (tokenised with the tokenizer's special tokens).
        max_new_tokens: how many tokens to generate, >= 1.

    Returns:
        The decoded new text.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    enc = tokenizer([prompt], return_tensors="pt").to(_device(model))
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def perplexity(model: Any, tokenizer: Any, text: str) -> float:
    """exp(mean negative log-likelihood) of ``text``'s tokens after the first.

    The text is tokenised with special tokens (a BOS when the tokenizer adds one); every
    token but the first is predicted from those before it. Computed in float64 from the
    model's logits.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer.
        text: at least two tokens of text.

    Returns:
        The perplexity (>= 1).
    """
    ids = tokenizer(text, return_tensors="pt")["input_ids"].to(_device(model))  # (1, n_tok)
    if ids.shape[1] < 2:
        raise ValueError(f"text must have at least two tokens to score, got {ids.shape[1]}")
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, :-1].double()  # (n_tok - 1, vocab)
    nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="mean")
    return float(math.exp(nll.item()))


def sanity_check(model: Any, tokenizer: Any, *, max_perplexity: float = 30.0,
                 max_new_tokens: int = 8) -> dict[str, Any]:
    """Check a model numerically: a factual greedy answer and a bounded perplexity.

    Args:
        model: a causal LM in eval mode (as from ``load_model``).
        tokenizer: its tokenizer.
        max_perplexity: the perplexity of :data:`PARAGRAPH` must be below this.
        max_new_tokens: tokens generated after :data:`FACT_PROMPT`.

    Returns:
        ``{"prompt", "completion", "expected", "answer_ok", "text", "perplexity",
        "max_perplexity", "perplexity_ok", "ok"}``; ``ok`` is ``answer_ok and perplexity_ok``.
    """
    completion = greedy_completion(model, tokenizer, FACT_PROMPT, max_new_tokens)
    ppl = perplexity(model, tokenizer, PARAGRAPH)
    answer_ok = FACT_ANSWER in completion
    ppl_ok = math.isfinite(ppl) and ppl < max_perplexity
    report = {
        "prompt": FACT_PROMPT, "completion": completion, "expected": FACT_ANSWER,
        "answer_ok": answer_ok, "text": PARAGRAPH, "perplexity": ppl,
        "max_perplexity": max_perplexity, "perplexity_ok": ppl_ok, "ok": answer_ok and ppl_ok,
    }
    if not report["ok"]:
        logger.warning("sanity check failed: completion %r (want %r), perplexity %.2f (want < %g)",
                       completion, FACT_ANSWER, ppl, max_perplexity)
    return report
