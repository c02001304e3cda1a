"""The real embedded models load offline and are numerically sane.

Expected values were measured on CPU, float32, torch 2.13.0, transformers 5.24.0 (the
range pyproject pins: the 5.x GGUF loader changed between minors). Gemma 3 270M's first
load converts the GGUF (~1 min on 2 cores) into the user cache; later loads take seconds.
SmolLM2 is converted into a fresh cache on purpose, so the test can compare the
GGUF-converted model with its reload from the cache.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from corrsteer.errors import CorrsteerError
from corrsteer.models import d_model, load_model, model_id, n_layers, sanity_check
from corrsteer.models.embedded import EMBEDDED, locate_parts
from corrsteer.models.sanity import greedy_completion

pytestmark = pytest.mark.model

PPL_GEMMA = 11.0921  # sanity.PARAGRAPH, measured
PPL_SMOLLM2 = 14.5513


def _require(name: str) -> None:
    try:
        locate_parts(EMBEDDED[name])
    except CorrsteerError as exc:
        pytest.skip(f"embedded model not installed: {exc}")


@contextmanager
def _no_warnings() -> Iterator[None]:
    """Fail on any Python warning or transformers log warning raised inside the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("transformers")
    log.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield
    finally:
        log.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]


@pytest.fixture(scope="module")
def gemma():
    _require("gemma-3-270m")
    return load_model("gemma-3-270m", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    _require("smollm2-135m-instruct")
    mp = pytest.MonkeyPatch()
    mp.setenv("CORRSTEER_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        model, tok = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
        yield model, tok, mp
    finally:
        mp.undo()


def test_gemma_3_270m_loads_offline_and_completes_sensibly(gemma):
    model, tok = gemma
    assert (model_id(model), n_layers(model), d_model(model)) == ("gemma-3-270m", 18, 640)
    assert not model.training and model.dtype == torch.float32
    assert tok.padding_side == "left" and tok.pad_token == "<pad>" and not tok.chat_template
    with _no_warnings():
        report = sanity_check(model, tok)
        plain = greedy_completion(model, tok, "The capital of France is", max_new_tokens=12)
    assert report["completion"] == " Paris\nQ: What is the capital", report
    assert report["perplexity"] == pytest.approx(PPL_GEMMA, abs=0.01) and report["ok"]
    # A base 270M model at Q4 does not say "Paris" without the few-shot prompt:
    assert plain == " the capital of the country of France. It is the largest"


def test_smollm2_chat_model_is_sane_and_answers_in_chat(smollm2):
    model, tok, _ = smollm2
    assert (model_id(model), n_layers(model), d_model(model)) == ("smollm2-135m-instruct", 30, 576)
    assert tok.padding_side == "left" and tok.pad_token == "<|im_end|>" and tok.chat_template
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        tokenize=False, add_generation_prompt=True)
    enc = tok([chat], return_tensors="pt", add_special_tokens=False)
    with _no_warnings():
        report = sanity_check(model, tok)
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert report["completion"] == " Paris\nQ: What is the capital", report
    assert report["perplexity"] == pytest.approx(PPL_SMOLLM2, abs=0.01) and report["ok"]
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer == "The capital of France is Paris."


def test_cached_reload_is_bit_identical_to_gguf_conversion(smollm2):
    converted, tok, _ = smollm2  # converted from the GGUF in this session's fresh cache
    reloaded, tok2 = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    enc = tok(["The capital of France is", "Hi"], return_tensors="pt", padding=True)
    assert torch.equal(enc["input_ids"], tok2(["The capital of France is", "Hi"],
                                              return_tensors="pt", padding=True)["input_ids"])
    with torch.inference_mode():
        a = converted(**enc).logits
        b = reloaded(**enc).logits
    assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"
    assert tok2.chat_template == tok.chat_template
    # The same file passed as a .gguf path shares the cache (keyed by sha256).
    path = locate_parts(EMBEDDED["smollm2-135m-instruct"])[0]
    by_path, _ = load_model(path, device="cpu", dtype="float32")
    assert model_id(by_path) == "SmolLM2-135M-Instruct.Q4_1-b179c9523d0e"
    with torch.inference_mode():
        assert torch.equal(by_path(**enc).logits, a)
