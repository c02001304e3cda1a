"""corrsteer.method.generation.generate: batched greedy generation with per-sequence stops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from corrsteer.hooks import capture, steer
from corrsteer.method.generation import Generation, generate

PROMPTS = ["Once upon a time,", "Hi", "The cat sat on the mat", "x", "Hello world"]
N_NEW = 8


def _alone(model: Any, tok: Any, prompt: str, n_new: int = N_NEW, **kw: Any) -> list[int]:
    """Greedy tokens of one prompt with plain model.generate, EOS and what follows dropped."""
    enc = tok([prompt], return_tensors="pt")
    ids = model.generate(**enc, max_new_tokens=n_new, do_sample=False, **kw)[0, enc["input_ids"].shape[1]:].tolist()
    return ids[: ids.index(tok.eos_token_id) + 1] if tok.eos_token_id in ids else ids


def test_batched_sorted_generation_keeps_prompt_order(tiny_model: Any, tiny_tokenizer: Any) -> None:
    gens = generate(tiny_model, tiny_tokenizer, PROMPTS, N_NEW, batch_size=2)
    assert [g.prompt for g in gens] == PROMPTS
    for prompt, g in zip(PROMPTS, gens):
        ids = _alone(tiny_model, tiny_tokenizer, prompt)
        assert g.completion == tiny_tokenizer.decode(ids, skip_special_tokens=True), prompt
        assert g.n_new_tokens == len(ids)
        assert g.finished_by == ("eos" if ids[-1] == tiny_tokenizer.eos_token_id else "length")
        assert g.n_prompt_tokens == len(prompt) + 1  # characters + BOS
        assert g.activations is None


def test_stop_strings_cut_the_completion(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    free = generate(tiny_llama, tiny_tokenizer, PROMPTS, N_NEW)
    # the first row whose completion has a 2-character string first ending at character k >= 2
    i, k = next((i, k) for i, g in enumerate(free) for k in range(2, len(g.completion) - 1)
                if g.completion.find(g.completion[k - 1: k + 1]) == k - 1)
    stop = free[i].completion[k - 1: k + 1]
    gens = generate(tiny_llama, tiny_tokenizer, PROMPTS, N_NEW, stop_strings=[stop, "never-there"], batch_size=3)
    for f, g in zip(free, gens):
        if stop in f.completion:
            cut = f.completion.index(stop)
            assert g.finished_by == "stop" and g.completion == f.completion[:cut]
            assert g.n_new_tokens == cut + len(stop)  # one character per token
        else:
            assert (g.completion, g.finished_by, g.n_new_tokens) == (f.completion, f.finished_by, f.n_new_tokens)
    assert gens[i].completion == free[i].completion[: k - 1]
    assert generate(tiny_llama, tiny_tokenizer, [PROMPTS[i]], N_NEW, stop_strings=stop)[0] == gens[i]


def test_eos_finishes_a_sequence(tiny_gemma2: Any, tiny_tokenizer: Any) -> None:
    free = generate(tiny_gemma2, tiny_tokenizer, PROMPTS, N_NEW)
    ids = tiny_tokenizer(free[0].completion, add_special_tokens=False)["input_ids"]
    k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])
    tiny_gemma2.generation_config.eos_token_id = ids[k]  # the EOS generate stops on is the model's
    gens = generate(tiny_gemma2, tiny_tokenizer, PROMPTS, N_NEW)
    assert gens[0].finished_by == "eos" and gens[0].n_new_tokens == k + 1
    assert gens[0].completion == free[0].completion[: k + 1]  # the stand-in EOS is an ordinary character


def test_capture_rows_follow_prompt_order(tiny_model: Any, tiny_tokenizer: Any, make_tiny_sae: Any) -> None:
    saes = {1: make_tiny_sae(32, 40, "relu", seed=3, layer=1), 2: make_tiny_sae(32, 40, "topk", seed=4, layer=2)}
    seen: list[int] = []
    with capture(tiny_model, saes, pool="mean") as cap:
        gens = generate(tiny_model, tiny_tokenizer, PROMPTS, N_NEW, stop_strings=["#o"], batch_size=2,
                        capture=cap, on_batch=lambda idx, batch: seen.extend(idx))
        together = cap.result()
        counts = cap.counts()
        assert len(cap.results) == 1
        cap.take()
        for prompt in PROMPTS:
            generate(tiny_model, tiny_tokenizer, [prompt], N_NEW, stop_strings=["#o"], capture=cap)
        alone = cap.result()
    assert sorted(seen) == list(range(len(PROMPTS))) and seen != list(range(len(PROMPTS)))  # sorted by length
    assert counts.tolist() == [g.n_new_tokens for g in gens]
    for layer in saes:
        assert together[layer].shape == (len(PROMPTS), 40)
        np.testing.assert_allclose(together[layer], alone[layer], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(np.stack([g.activations[layer] for g in gens]), together[layer])


def test_generate_inside_steer_matches_model_generate(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    v = torch.linspace(-2.0, 2.0, 32)
    with steer(tiny_llama, {1: v}):
        gens = generate(tiny_llama, tiny_tokenizer, PROMPTS, N_NEW, batch_size=4)
        alone = [_alone(tiny_llama, tiny_tokenizer, p) for p in PROMPTS]
    assert [g.completion for g in gens] == [tiny_tokenizer.decode(ids, skip_special_tokens=True) for ids in alone]
    assert [g.completion for g in gens] != [g.completion for g in generate(tiny_llama, tiny_tokenizer, PROMPTS, N_NEW)]


def test_prompt_with_bos_text_gets_one_bos(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    plain, with_bos = generate(tiny_llama, tiny_tokenizer, ["Hello", "<bos>Hello"], N_NEW)
    assert (plain.completion, plain.n_prompt_tokens) == (with_bos.completion, with_bos.n_prompt_tokens)
    assert with_bos.prompt == "<bos>Hello"


def test_empty_prompt_list_and_progress_bar(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    assert generate(tiny_llama, tiny_tokenizer, [], N_NEW) == []
    gens = generate(tiny_llama, tiny_tokenizer, PROMPTS[:2], 2, progress=True)
    assert all(isinstance(g, Generation) and g.n_new_tokens <= 2 for g in gens)


def test_bad_arguments_raise(tiny_llama: Any, tiny_tokenizer: Any, make_tiny_sae: Any) -> None:
    cases = [
        (dict(prompts="Hello"), TypeError, "list of strings"),
        (dict(prompts=["ok", ""]), ValueError, r"prompts\[1\]"),
        (dict(max_new_tokens=0), ValueError, "max_new_tokens"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(stop_strings=["", "x"]), ValueError, "stop_strings"),
    ]
    for kw, error, match in cases:
        args = dict(prompts=["Hello"], max_new_tokens=2) | kw
        with pytest.raises(error, match=match):
            generate(tiny_llama, tiny_tokenizer, args.pop("prompts"), args.pop("max_new_tokens"), **args)
    with pytest.raises(TypeError, match="causal LM"):
        generate("model", tiny_tokenizer, ["Hello"], 2)
    cap = capture(tiny_llama, {1: make_tiny_sae(32, 8, seed=0, layer=1)})
    with pytest.raises(ValueError, match="active capture"):
        generate(tiny_llama, tiny_tokenizer, ["Hello"], 2, capture=cap)  # not entered
    pad = tiny_tokenizer.pad_token
    tiny_tokenizer.pad_token = None
    try:
        with pytest.raises(ValueError, match="pad token"):
            generate(tiny_llama, tiny_tokenizer, ["Hello"], 2)
    finally:
        tiny_tokenizer.pad_token = pad
