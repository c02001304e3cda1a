"""Fast tests of corrsteer.models / layers / embedded on tiny random models and fake files.

No test here needs the real embedded weights (those are in test_models_embedded.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import pytest
import torch

import corrsteer.models.embedded as embedded
import corrsteer.models.loading as models
from corrsteer.errors import CorrsteerError
from corrsteer.models import (
    d_model,
    find_layers,
    load_model,
    model_id,
    n_layers,
    register_layers,
    resolve_device,
    resolve_dtype,
    unregister_layers,
)
from corrsteer.models.embedded import EmbeddedModel, assemble, cache_dir, converted_dir, embedded_gguf

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
             num_attention_heads=2, num_key_value_heads=1, head_dim=8)


def _tiny(kind: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random model of one architecture, built in-process."""
    torch.manual_seed(seed)
    t = transformers
    if kind == "llama":
        return t.LlamaForCausalLM(t.LlamaConfig(**SMALL))
    if kind == "gemma2":
        return t.Gemma2ForCausalLM(t.Gemma2Config(**SMALL))
    if kind == "gemma3":
        return t.Gemma3ForCausalLM(t.Gemma3TextConfig(**SMALL))
    if kind == "gemma3-multimodal":
        vision = t.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=28, patch_size=14)
        config = t.Gemma3Config(text_config=t.Gemma3TextConfig(**SMALL).to_dict(),
                                vision_config=vision.to_dict(), mm_tokens_per_image=4)
        return t.Gemma3ForConditionalGeneration(config)
    if kind == "qwen2":
        return t.Qwen2ForCausalLM(t.Qwen2Config(**SMALL))
    if kind == "mistral":
        return t.MistralForCausalLM(t.MistralConfig(**SMALL))
    if kind == "gpt2":
        return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2,
                                              n_positions=32, bos_token_id=2, eos_token_id=1))
    raise ValueError(kind)


def _tiny_tokenizer(pad: bool = False):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models

    words = ["<unk>", "<eos>", "<bos>", "<pad>"] + [f"w{i}" for i in range(60)]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    extra = {"pad_token": "<pad>"} if pad else {}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>",
                                                unk_token="<unk>", bos_token="<bos>", **extra)


ARCHS = ["llama", "gemma2", "gemma3", "gemma3-multimodal", "qwen2", "mistral", "gpt2"]
EXPECTED_PATH = {"gemma3-multimodal": "model.language_model.layers", "gpt2": "transformer.h"}


@pytest.mark.parametrize("kind", ARCHS)
def test_find_layers_returns_decoder_stack(kind):
    model = _tiny(kind).eval()
    layers = find_layers(model)
    path = EXPECTED_PATH.get(kind, "model.layers")
    expected = model.get_submodule(path)
    assert layers is expected, f"{kind}: found {type(layers[0]).__name__}, expected {path}"
    assert n_layers(model) == 3 and d_model(model) == 16
    # Each layer's output is the residual stream the model reports as hidden_states[l + 1]
    # (the last entry is after the final norm in transformers, so it is left out).
    outs: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(
        lambda _m, _a, o: outs.append(o[0] if isinstance(o, tuple) else o)) for layer in layers]
    try:
        with torch.no_grad():
            ids = torch.tensor([[5, 6, 7, 8]])
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    assert len(outs) == 3
    for layer in range(2):
        assert torch.equal(outs[layer], hs[layer + 1]), f"{kind} layer {layer}"


def test_find_layers_on_bare_decoder_models():
    llama = _tiny("llama")
    assert find_layers(llama.model) is llama.model.layers
    gpt2 = _tiny("gpt2")
    assert find_layers(gpt2.transformer) is gpt2.transformer.h


class _Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = torch.nn.Linear(width, width)


class _Custom(torch.nn.Module):
    """An unknown architecture: blocks under backbone.stack, plus a smaller expert list."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 8)
        self.backbone = torch.nn.Module()
        self.backbone.stack = torch.nn.ModuleList(_Block(8) for _ in range(4))
        self.experts = torch.nn.ModuleList(torch.nn.Linear(8, 2) for _ in range(6))


class _NoLayers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)


def test_find_layers_search_picks_the_heaviest_block_list():
    model = _Custom()
    assert find_layers(model) is model.backbone.stack  # 4 blocks beat 6 small experts
    assert d_model(model) == 8  # from the input embeddings: no config


def test_find_layers_unknown_architecture_says_how_to_register():
    with pytest.raises(CorrsteerError, match=r"register_layers\('_NoLayers', 'attr.path'\)"):
        find_layers(_NoLayers())
    with pytest.raises(CorrsteerError, match="residual width"):
        d_model(_NoLayers())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        find_layers("not a model")


@pytest.mark.parametrize("key", [_Custom, "_Custom"])
def test_register_layers_overrides_search(key):
    model = _Custom()
    register_layers(key, "experts")
    try:
        assert find_layers(model) is model.experts
    finally:
        unregister_layers(key)
    assert find_layers(model) is model.backbone.stack


def test_register_layers_by_model_type_and_layers_attr():
    model = _tiny("llama")
    register_layers("llama", "model.layers")
    try:
        assert find_layers(model) is model.model.layers
    finally:
        unregister_layers("llama")
    assert find_layers(model, layers_attr="model.layers") is model.model.layers
    with pytest.raises(CorrsteerError, match="does not lead to a non-empty torch.nn.ModuleList"):
        find_layers(model, layers_attr="model.norm")
    with pytest.raises(CorrsteerError, match="does not lead"):
        find_layers(model, layers_attr="model.nothing_here")
    with pytest.raises(ValueError, match="dotted attribute path"):
        find_layers(model, layers_attr="model..layers")
    with pytest.raises(TypeError):
        register_layers(3, "model.layers")


# ---------------------------------------------------------------- embedded GGUF parts


def _fake_parts(root: Path, contents: list[bytes], prefix: str = "cs_fake_part") -> EmbeddedModel:
    """Write fake packages (whose __init__ raises if imported) holding the part files."""
    parts = []
    for i, data in enumerate(contents):
        pkg = root / f"{prefix}{i + 1}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('corrsteer must not import me')\n")
        (pkg / "data" / f"fake.gguf.part{i:02d}").write_bytes(data)
        parts.append((f"{prefix}-dist{i + 1}", pkg.name, f"data/fake.gguf.part{i:02d}"))
    whole = b"".join(contents)
    return EmbeddedModel(name="fake-model", filename="fake.gguf", parts=tuple(parts),
                         sha256=hashlib.sha256(whole).hexdigest(), size=len(whole), chat=False,
                         install="pip install cs-fake-dist1 cs-fake-dist2 cs-fake-dist3")


@pytest.fixture
def fake_embedded(tmp_path, monkeypatch):
    contents = [os.urandom(3000), os.urandom(2500), b"tail"]
    spec = _fake_parts(tmp_path / "site", contents)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(embedded.EMBEDDED, spec.name, spec)
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    return spec, b"".join(contents)


def test_embedded_gguf_assembles_verified_file_without_importing(fake_embedded):
    spec, whole = fake_embedded
    path = embedded_gguf(spec.name)
    assert path.read_bytes() == whole
    assert path.is_relative_to(cache_dir())
    assert not any(name.startswith("cs_fake_part") for name in sys.modules)
    assert [p.name for p in path.parent.iterdir()] == ["fake.gguf"]  # no temp files left


def test_embedded_gguf_reuses_cache_and_rebuilds_corrupt_file(fake_embedded, monkeypatch):
    spec, whole = fake_embedded
    path = embedded_gguf(spec.name)
    calls = []
    real = embedded.assemble
    monkeypatch.setattr(embedded, "assemble", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert embedded_gguf(spec.name) == path and calls == []
    path.write_bytes(b"x" * len(whole))  # same size, wrong bytes
    assert embedded_gguf(spec.name).read_bytes() == whole and calls == [1]


def test_assemble_sha_mismatch_raises_and_leaves_nothing(tmp_path):
    part = tmp_path / "p0"
    part.write_bytes(b"hello")
    dest = tmp_path / "out" / "model.gguf"
    with pytest.raises(CorrsteerError, match="reinstall"):
        assemble([part], dest, sha256="0" * 64, size=5)
    with pytest.raises(CorrsteerError, match="expected 6 bytes"):
        assemble([part], dest, sha256=hashlib.sha256(b"hello").hexdigest(), size=6)
    with pytest.raises(IsADirectoryError):  # an unreadable part mid-way
        assemble([part, tmp_path], dest, sha256="0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_missing_embedded_packages_name_the_pip_command(fake_embedded, monkeypatch):
    spec, _ = fake_embedded
    broken = EmbeddedModel(**{**spec.__dict__, "parts": spec.parts[:2] + (
        ("cs-missing-dist", "cs_missing_pkg_xyz", "data/x"),)})
    monkeypatch.setitem(embedded.EMBEDDED, "gemma-3-270m", broken)
    with pytest.raises(CorrsteerError, match=r"cs-missing-dist.*pip install"):
        load_model("gemma-3-270m")


def test_real_embedded_specs_match_installed_files_without_import():
    for spec in embedded.EMBEDDED.values():
        try:
            parts = embedded.locate_parts(spec)
        except CorrsteerError:
            continue  # packages not installed here: nothing to compare
        assert sum(p.stat().st_size for p in parts) == spec.size, spec.name
        assert not any(pkg in sys.modules for _, pkg, _ in spec.parts)


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("CORRSTEER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == (tmp_path / "xdg" / "corrsteer").resolve()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == (tmp_path / "home" / ".cache" / "corrsteer").resolve()
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == (tmp_path / "mine").resolve()


def test_converted_dir_keyed_by_sha_and_transformers_version(tmp_path, monkeypatch):
    a, b = "a" * 64, "b" * 64
    assert converted_dir(a, tmp_path) != converted_dir(b, tmp_path)
    assert converted_dir(a, tmp_path).name.endswith(sys.modules["transformers"].__version__)
    # transformers 5 may swap its module object in sys.modules on first lazy access
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "9.9.9")
    assert converted_dir(a, tmp_path).name == "aaaaaaaaaaaaaaaa-transformers-9.9.9"
    with pytest.raises(ValueError, match="64 lower-case hex"):
        converted_dir("abc", tmp_path)


# ---------------------------------------------------------------- loading


def _save_tiny_dir(path: Path, seed: int = 0, pad: bool = False, sampling: bool = True) -> Path:
    model = _tiny("llama", seed)
    if sampling:  # a checkpoint that ships sampling defaults
        model.generation_config.do_sample = True
        model.generation_config.temperature = 0.7
        model.generation_config.top_p = 0.9
    model.save_pretrained(str(path))
    _tiny_tokenizer(pad=pad).save_pretrained(str(path))
    return path


def test_load_model_local_dir_is_ready_for_greedy_batches(tmp_path):
    folder = _save_tiny_dir(tmp_path / "tiny")
    model, tok = load_model(folder, device="cpu")
    assert not model.training and model.dtype == torch.float32
    assert tok.padding_side == "left" and tok.pad_token == "<eos>"  # no pad -> EOS
    gen = model.generation_config
    assert (gen.do_sample, gen.temperature, gen.top_p) == (False, None, None)
    assert gen.pad_token_id == tok.pad_token_id
    reference = _tiny("llama", 0).eval()
    ids = torch.tensor([[4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    enc = tok(["w1 w2 w3", "w4"], return_tensors="pt", padding=True)
    assert enc["attention_mask"][1].tolist() == [0, 0, 1]  # left padding
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)  # filterwarnings=error
    assert out.shape == (2, 6)


def test_load_model_uses_the_tokenizer_pad_when_present(tmp_path):
    _, tok = load_model(_save_tiny_dir(tmp_path / "tiny", pad=True), device="cpu")
    assert tok.pad_token == "<pad>"


def test_load_model_dtype_and_device_arguments(tmp_path):
    folder = _save_tiny_dir(tmp_path / "tiny")
    model, _ = load_model(str(folder), device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("torch.float16", torch.device("cpu")) == torch.float16
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_model(folder, device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_model_id_is_stable_across_loads_and_dtypes(tmp_path):
    a = _save_tiny_dir(tmp_path / "a", seed=0)
    b = _save_tiny_dir(tmp_path / "b", seed=1)
    id_a = model_id(load_model(a, device="cpu")[0])
    assert id_a.startswith("a-") and len(id_a) == 14
    assert model_id(load_model(a, device="cpu", dtype="bfloat16")[0]) == id_a
    assert model_id(load_model(b, device="cpu")[0]) != id_a
    hub_like = _tiny("llama")
    hub_like.config._name_or_path = "some-org/some-model"
    assert model_id(hub_like) == "some-org/some-model"


@pytest.mark.parametrize("bad", ["./does/not/exist", "/no/such/model.gguf", "a/b/c", "bad name!"])
def test_load_model_rejects_paths_that_are_not_models(bad):
    with pytest.raises(ValueError, match="neither an embedded model"):
        load_model(bad, device="cpu")


def test_load_model_rejects_folders_without_config_and_bad_types(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path, device="cpu")
    with pytest.raises(TypeError, match="name_or_path"):
        load_model(3, device="cpu")


def test_hub_id_offline_fails_fast_with_local_path_hint(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(CorrsteerError, match=r"hub is unreachable.*load_model\('DIR'\)"):
        load_model("corrsteer-test-org/no-such-model", device="cpu")


def test_hub_probe_honours_offline_env_and_endpoint(monkeypatch):
    from corrsteer.storage.hub import hub_reachable

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    assert hub_reachable(timeout=1.0) is False


class _FakeGGUFLoader:
    """Stands in for transformers' GGUF loader: a tiny Llama 'de-quantised' from a file."""

    def __init__(self) -> None:
        self.calls = 0

    def classes(self):
        real_model, real_tok = transformers.AutoModelForCausalLM, transformers.AutoTokenizer
        loader = self

        class Model:
            @staticmethod
            def from_pretrained(path, gguf_file=None, **kwargs):
                if gguf_file is None:
                    return real_model.from_pretrained(path, **kwargs)
                loader.calls += 1
                model = _tiny("llama", seed=len((Path(path) / gguf_file).read_bytes()))
                model.config.quantization_config = {"quant_method": "gguf", "gguf_file": gguf_file}
                return model

        class Tok:
            @staticmethod
            def from_pretrained(path, gguf_file=None, **kwargs):
                return _tiny_tokenizer() if gguf_file else real_tok.from_pretrained(path, **kwargs)

        return Model, Tok


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    loader = _FakeGGUFLoader()
    monkeypatch.setattr(models, "_auto_classes", loader.classes)
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny-q4.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    return loader, gguf


def test_gguf_converted_once_then_loaded_from_cache_bit_identical(fake_gguf):
    loader, gguf = fake_gguf
    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    first, _ = load_model(gguf, device="cpu")
    target = converted_dir(sha)
    assert loader.calls == 1 and (target / "corrsteer.json").is_file()
    assert "quantization_config" not in (target / "config.json").read_text()
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp folders
    second, tok = load_model(gguf, device="cpu")
    assert loader.calls == 1 and tok.padding_side == "left"
    ids = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        assert torch.equal(first(input_ids=ids).logits, second(input_ids=ids).logits)
    assert model_id(first) == model_id(second) == f"tiny-q4-{sha[:12]}"
    gguf.write_bytes(b"GGUF" + b"\1" * 61)  # another file: another cache entry
    load_model(gguf, device="cpu")
    assert loader.calls == 2 and len(list(target.parent.iterdir())) == 2


def test_gguf_broken_cache_is_rebuilt(fake_gguf, caplog):
    loader, gguf = fake_gguf
    load_model(gguf, device="cpu")
    target = converted_dir(hashlib.sha256(gguf.read_bytes()).hexdigest())
    (target / "model.safetensors").unlink()
    with caplog.at_level(logging.WARNING, logger="corrsteer.models"):
        load_model(gguf, device="cpu")
    assert loader.calls == 2 and "converting again" in caplog.text
    assert (target / "model.safetensors").is_file()


def _raise(exc: BaseException):
    def fail(*_args, **_kwargs):
        raise exc
    return fail


def test_gguf_failed_save_still_loads_and_leaves_no_partial_cache(fake_gguf, monkeypatch, caplog):
    loader, gguf = fake_gguf
    target = converted_dir(hashlib.sha256(gguf.read_bytes()).hexdigest())
    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "save_pretrained",
                        _raise(OSError("disk full")))
    with caplog.at_level(logging.WARNING, logger="corrsteer.models"):
        model, _ = load_model(gguf, device="cpu")  # the model is fine; only the cache failed
    assert "disk full" in caplog.text and not model.training
    assert not target.exists() and list(target.parent.iterdir()) == []
    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "save_pretrained",
                        _raise(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed mid-save: the temp folder goes too
        load_model(gguf, device="cpu")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_embedded_name_assembles_only_when_no_converted_cache(fake_embedded, fake_gguf,
                                                              monkeypatch):
    spec, whole = fake_embedded
    loader, _ = fake_gguf
    assembled = []
    real = models.embedded_gguf
    monkeypatch.setattr(models, "embedded_gguf", lambda name: assembled.append(name) or real(name))
    model, _ = load_model(spec.name, device="cpu")
    assert (loader.calls, assembled, model_id(model)) == (1, [spec.name], spec.name)
    load_model(spec.name, device="cpu")  # converted cache: no assembly, no hashing
    assert (loader.calls, assembled) == (1, [spec.name])
    (converted_dir(spec.sha256) / "config.json").write_text("{not json")
    load_model(spec.name, device="cpu")  # broken cache: assemble and convert again
    assert (loader.calls, assembled) == (2, [spec.name, spec.name])


def test_pad_token_falls_back_to_model_config_then_eos():
    model = _tiny("llama")
    model.config.pad_token_id = 3  # "<pad>" is in the vocabulary but not declared special
    tok = _tiny_tokenizer()
    models._prepare_tokenizer(model, tok)
    assert (tok.pad_token, tok.pad_token_id, model.generation_config.pad_token_id) == ("<pad>", 3, 3)
    model.config.pad_token_id = None
    tok = _tiny_tokenizer()
    models._prepare_tokenizer(model, tok)
    assert tok.pad_token == "<eos>" and tok.padding_side == "left"
