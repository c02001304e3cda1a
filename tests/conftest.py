"""Shared fixtures: tiny random models, a character-level tokenizer and tiny SAEs, built in-process.

Nothing here downloads anything. The models are transformers' own Llama, Gemma 2 and
Gemma 3 (text) classes with 3 decoder layers, ``d_model = 32`` and a vocabulary of 100
tokens that matches ``tiny_tokenizer`` id for id, so that text round-trips:

- ``tiny_tokenizer``: ``PreTrainedTokenizerFast`` over single characters (printable
  ASCII and ``\\n``), ids ``<pad>=0 <bos>=1 <eos>=2 <unk>=3``, prepends ``<bos>``,
  pads on the left.
- ``tiny_llama``, ``tiny_gemma2``, ``tiny_gemma3``: fresh eval-mode models (seeded, so
  every test sees the same weights); ``tiny_model`` is parametrized over the three.
- ``make_tiny_sae(d_in, d_sae, architecture="relu", seed=0, layer=None)``: a random
  ``corrsteer.SAE`` whose features fire on a fair share of the tiny models' residuals.

Example:
    def test_something(tiny_llama, tiny_tokenizer, make_tiny_sae):
        sae = make_tiny_sae(32, 64, "topk", seed=1, layer=1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

TINY_VOCAB = 100  # 4 special tokens + 95 printable ASCII characters + "\n"
TINY_D_MODEL = 32
TINY_LAYERS = 3
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def build_tiny_tokenizer() -> Any:
    """A left-padding character-level ``PreTrainedTokenizerFast`` of ``TINY_VOCAB`` tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + chars)}
    assert len(vocab) == TINY_VOCAB
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    core.decoder = decoders.Fuse()  # join the characters back without spaces
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                        special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="left")


def build_tiny_model(arch: str, seed: int = 0, n_layers: int = TINY_LAYERS, d_model: int = TINY_D_MODEL) -> Any:
    """A random transformers causal LM of architecture ``"llama" | "gemma2" | "gemma3"`` in eval mode."""
    import torch
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    common = dict(vocab_size=TINY_VOCAB, hidden_size=d_model, intermediate_size=2 * d_model,
                  num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  initializer_range=0.1)
    # Sliding windows shorter than the test prompts, so that the sliding cache is exercised.
    alternating = ["sliding_attention", "full_attention"] * n_layers
    if arch == "llama":
        config, cls = LlamaConfig(**common), LlamaForCausalLM
    elif arch == "gemma2":
        config, cls = Gemma2Config(**common, sliding_window=6, layer_types=alternating[:n_layers]), Gemma2ForCausalLM
    elif arch == "gemma3":
        config = Gemma3TextConfig(**common, sliding_window=6, layer_types=alternating[:n_layers])
        cls = Gemma3ForCausalLM
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.generation_config.do_sample = False
    return model


def build_tiny_sae(d_in: int, d_sae: int, architecture: str = "relu", seed: int = 0,
                   layer: int | None = None, site: str = "resid_post") -> Any:
    """A random ``corrsteer.SAE`` (float32) with ``W_enc`` scaled so that features fire on tiny residuals."""
    import corrsteer

    rng = np.random.default_rng(seed)
    W_enc = (rng.standard_normal((d_in, d_sae)) * 2.0).astype(np.float32)  # (d_in, d_sae)
    b_enc = (rng.standard_normal(d_sae) * 0.1).astype(np.float32)  # (d_sae,)
    W_dec = rng.standard_normal((d_sae, d_in)).astype(np.float32)  # (d_sae, d_in)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    b_dec = (rng.standard_normal(d_in) * 0.05).astype(np.float32)  # (d_in,)
    threshold = k = None
    if architecture == "jumprelu":
        threshold = rng.uniform(0.0, 0.5, d_sae).astype(np.float32)
    elif architecture == "topk":
        k = max(1, d_sae // 8)
    return corrsteer.SAE(W_enc, b_enc, W_dec, b_dec, threshold=threshold, architecture=architecture, k=k,
                         apply_b_dec_to_input=architecture == "topk", layer=layer, site=site,
                         hook_name=None if layer is None else f"blocks.{layer}.hook_{site}")



class Killed(Exception):
    """Raised by :func:`kill_at`'s checkpoint callback: stands in for killing the process."""


def kill_at(offset: int) -> Any:
    """An ``on_checkpoint`` callback that raises :class:`Killed` at the checkpoint of ``offset`` samples."""
    def on_checkpoint(done: int) -> None:
        if done == offset:
            raise Killed
    return on_checkpoint

@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_llama() -> Any:
    return build_tiny_model("llama")


@pytest.fixture
def tiny_gemma2() -> Any:
    return build_tiny_model("gemma2")


@pytest.fixture
def tiny_gemma3() -> Any:
    return build_tiny_model("gemma3")


@pytest.fixture(params=["llama", "gemma2", "gemma3"])
def tiny_model(request: pytest.FixtureRequest) -> Any:
    """Each of the three tiny architectures in turn."""
    return build_tiny_model(request.param)


@pytest.fixture
def make_tiny_sae() -> Callable[..., Any]:
    """Factory ``make_tiny_sae(d_in, d_sae, architecture="relu", seed=0, layer=None, site="resid_post")``."""
    return build_tiny_sae
