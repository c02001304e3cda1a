"""``corrsteer.models.sites.read_sites``: the residual stream at given sites, checked against
``output_hidden_states``, and the forward pass cut short after the deepest site."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from corrsteer.errors import CorrsteerError
from corrsteer.models.sites import read_sites
from corrsteer.models.layers import find_layers


def _inputs(tokenizer: Any) -> dict[str, torch.Tensor]:
    enc = tokenizer(["the cat sat on the mat", "a dog"], return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_read_sites_equals_hidden_states(tiny_model: Any, tiny_tokenizer: Any) -> None:
    layers = find_layers(tiny_model)
    inputs = _inputs(tiny_tokenizer)
    with torch.no_grad():
        ref = tiny_model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    keys = [(1, "resid_post"), (0, "resid_pre"), (1, "resid_pre")]
    seen = read_sites(tiny_model, layers, keys, **inputs)
    assert sorted(seen) == sorted(keys)
    # resid_post of layer l is hidden_states[l + 1] for every layer but the last (whose
    # hidden_states entry comes after the final norm); resid_pre of layer l is hidden_states[l]
    torch.testing.assert_close(seen[(1, "resid_post")], ref[2], rtol=0, atol=0)
    torch.testing.assert_close(seen[(0, "resid_pre")], ref[0], rtol=0, atol=0)
    torch.testing.assert_close(seen[(1, "resid_pre")], ref[1], rtol=0, atol=0)


def test_read_sites_stops_after_the_deepest_site(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    layers = find_layers(tiny_llama)
    calls: list[str] = []
    hooks = [layers[-1].register_forward_hook(lambda *a: calls.append("last layer")),
             tiny_llama.lm_head.register_forward_hook(lambda *a: calls.append("lm_head"))]
    try:
        read_sites(tiny_llama, layers, [(0, "resid_post")], **_inputs(tiny_tokenizer))
        assert calls == []
        read_sites(tiny_llama, layers, [(len(layers) - 1, "resid_post")], **_inputs(tiny_tokenizer))
        assert calls == ["last layer"]
    finally:
        for h in hooks:
            h.remove()
    # no hook is left behind: a plain forward runs to the logits
    assert tiny_llama(**_inputs(tiny_tokenizer)).logits.shape[0] == 2
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in layers)


def test_read_sites_names_unreached_sites(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    unrelated = torch.nn.ModuleList([torch.nn.Identity()])  # a "layer" the model never calls
    with pytest.raises(CorrsteerError, match="did not all run"):
        read_sites(tiny_llama, unrelated, [(0, "resid_post")], **_inputs(tiny_tokenizer))
