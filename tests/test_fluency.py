"""Fluency figures: degenerate continuations, and the unsteered model's perplexity of them."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from corrsteer.method.fluency import degenerate_rate, is_degenerate, unsteered_perplexity


@pytest.mark.parametrize("text, degenerate", [
    ("a pizza and a bottle of wine", False),
    ("She said that the weather was fine and the day was long.", False),
    ("", True),
    ("   ", True),
    ("food food food food food", True),            # one word is more than half of it
    ("and the and the and the", True),             # a 3-gram twice
    ("I went to the shop and then I went to the shop", True),
    ("the the cat", False),                        # short: no rule applies
])
def test_is_degenerate(text: str, degenerate: bool) -> None:
    assert is_degenerate(text) is degenerate


def test_degenerate_rate_is_the_share_of_records() -> None:
    recs = [{"completion": "x y z w"}, {"completion": ""}, {"completion": "go go go go"}, {"completion": "fine"}]
    assert degenerate_rate(recs) == 0.5
    assert math.isnan(degenerate_rate([]))


def test_perplexity_equals_the_full_forward_pass(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    prompts = ["abc", "hello wor", "x"]
    completions = ["def", "ld!", ""]  # an empty completion is skipped
    got = unsteered_perplexity(tiny_llama, tiny_tokenizer, prompts, completions, batch_size=2)
    nll, n = 0.0, 0
    with torch.no_grad():
        for p, c in zip(prompts[:2], completions[:2]):
            ids = torch.tensor([tiny_tokenizer(p + c)["input_ids"]])
            n_prompt = len(tiny_tokenizer(p)["input_ids"])
            logp = torch.log_softmax(tiny_llama(input_ids=ids).logits[0].float(), dim=-1)
            for t in range(n_prompt, ids.shape[1]):
                nll -= float(logp[t - 1, ids[0, t]])
                n += 1
    assert n == 6
    assert got == pytest.approx(math.exp(nll / n), rel=1e-5)
    with pytest.raises(ValueError, match="one completion each"):
        unsteered_perplexity(tiny_llama, tiny_tokenizer, ["a"], [])
