"""SAE file formats: every real layout written small in tmp_path, loaded back and checked."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import corrsteer
from corrsteer.core import reference
from corrsteer.errors import CorrsteerError
from corrsteer.sae.hook_names import hook_name_for, parse_hook_name
from corrsteer.storage.safetensors import read_tensors as read_safetensors

D_IN, D_SAE = 12, 20


def weights(seed: int = 0, d_in: int = D_IN, d_sae: int = D_SAE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W_enc": rng.normal(size=(d_in, d_sae)).astype(np.float32),
            "W_dec": rng.normal(size=(d_sae, d_in)).astype(np.float32),
            "b_enc": rng.normal(size=d_sae).astype(np.float32) * 0.1,
            "b_dec": rng.normal(size=d_in).astype(np.float32) * 0.1,
            "threshold": np.abs(rng.normal(size=d_sae)).astype(np.float32)}


def x_batch(seed: int = 1, n: int = 9) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D_IN)).astype(np.float32) * 2


def write_gs1(root: Path, w: dict[str, np.ndarray], layer: int = 7, lower: bool = False) -> Path:
    d = root / "gemma-scope-2b-pt-res" / f"layer_{layer}" / "width_16k" / "average_l0_5"
    d.mkdir(parents=True)
    names = {k: (k.lower() if lower else k) for k in w}
    np.savez(d / "params.npz", **{names[k]: v for k, v in w.items()})
    return d


def write_gs2(root: Path, w: dict[str, np.ndarray], hook: str | None = "model.layers.4.output",
              **cfg_extra: object) -> Path:
    d = root / "resid_post" / "layer_4_width_16k_l0_small"
    d.mkdir(parents=True)
    save_file({k.lower(): v for k, v in w.items()}, str(d / "params.safetensors"))
    if hook is not None:
        cfg = {"hf_hook_point_in": hook, "hf_hook_point_out": hook, "width": D_SAE,
               "model_name": "google/gemma-3-270m-pt", "architecture": "jump_relu", "l0": 5,
               "affine_connection": False, "type": "sae", **cfg_extra}
        (d / "config.json").write_text(json.dumps(cfg))
    return d


def write_saelens(root: Path, w: dict[str, np.ndarray], cfg: dict, name: str = "sl") -> Path:
    d = root / name
    d.mkdir(parents=True)
    save_file(w, str(d / "sae_weights.safetensors"))
    (d / "cfg.json").write_text(json.dumps(cfg))
    return d


V6_JUMPRELU = {"architecture": "jumprelu", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32",
               "device": "cpu", "apply_b_dec_to_input": False, "normalize_activations": "none",
               "reshape_activations": "none",
               "metadata": {"model_name": "gemma-2-2b", "hook_name": "blocks.5.hook_resid_post",
                            "hook_head_index": None, "sae_lens_version": "6.5.0"}}


def test_gemma_scope_1_layer_site_and_weights_from_path(tmp_path):
    w = weights()
    sae = corrsteer.SAE.load(write_gs1(tmp_path, w, layer=7))
    assert (sae.layer, sae.site, sae.hook_name) == (7, "resid_post", "blocks.7.hook_resid_post")
    assert sae.architecture == "jumprelu" and (sae.d_in, sae.d_sae) == (D_IN, D_SAE)
    for k in w:
        np.testing.assert_array_equal(getattr(sae, k), w[k])
    assert sae.meta["format"] == "gemma_scope_1"


def test_gemma_scope_1_lowercase_keys_and_file_path_load_the_same(tmp_path):
    w = weights()
    a = corrsteer.SAE.load(write_gs1(tmp_path / "a", w))
    b = corrsteer.SAE.load(write_gs1(tmp_path / "b", w, lower=True) / "params.npz")
    np.testing.assert_array_equal(a.W_enc, b.W_enc)
    np.testing.assert_array_equal(a.threshold, b.threshold)


def test_gemma_scope_1_layer_argument_fills_and_checks_the_layer(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    np.savez(d / "params.npz", **weights())
    assert corrsteer.SAE.load(d).layer is None
    sae = corrsteer.SAE.load(d, layer=3)
    assert (sae.layer, sae.hook_name) == (3, "blocks.3.hook_resid_post")
    with pytest.raises(ValueError, match="layer 7"):
        corrsteer.SAE.load(write_gs1(tmp_path, weights(), layer=7), layer=3)


def test_gemma_scope_2_reads_hook_from_config_and_encodes_like_gemma_scope_1(tmp_path):
    w = weights()
    gs2 = corrsteer.SAE.load(write_gs2(tmp_path / "g2", w))
    gs1 = corrsteer.SAE.load(write_gs1(tmp_path / "g1", w))
    assert (gs2.layer, gs2.site, gs2.hook_name) == (4, "resid_post", "blocks.4.hook_resid_post")
    assert gs2.model_name == "google/gemma-3-270m-pt"
    x = x_batch()
    np.testing.assert_array_equal(gs2.encode(x), gs1.encode(x))
    np.testing.assert_allclose(gs2.encode(x), reference.sae_encode(w | {"architecture": "jumprelu"},
                                                                   x), rtol=1e-5, atol=1e-5)


def test_gemma_scope_2_input_hook_is_resid_pre_and_missing_config_uses_folder_name(tmp_path):
    sae = corrsteer.SAE.load(write_gs2(tmp_path / "a", weights(), hook="model.layers.2.input"))
    assert (sae.layer, sae.site) == (2, "resid_pre")
    sae = corrsteer.SAE.load(write_gs2(tmp_path / "b", weights(), hook=None))
    assert (sae.layer, sae.site) == (4, "resid_post")


@pytest.mark.parametrize("extra", [{"type": "transcoder"}, {"affine_connection": True},
                                   {"hf_hook_point_out": "model.layers.4.post_feedforward_layernorm.output"}])
def test_gemma_scope_2_transcoders_are_refused(tmp_path, extra):
    with pytest.raises(CorrsteerError, match="config.json"):
        corrsteer.SAE.load(write_gs2(tmp_path, weights(), **extra))


def test_saelens_v6_config_with_metadata_hook(tmp_path):
    w = weights()
    sae = corrsteer.SAE.load(write_saelens(tmp_path, w, V6_JUMPRELU))
    assert (sae.layer, sae.site, sae.hook_name) == (5, "resid_post", "blocks.5.hook_resid_post")
    assert sae.model_name == "gemma-2-2b" and sae.meta["format"] == "saelens"
    np.testing.assert_array_equal(sae.threshold, w["threshold"])


def test_saelens_pre_6_topk_config_and_default_apply_b_dec(tmp_path):
    w = weights()
    w.pop("threshold")
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "hook_point": "blocks.8.hook_resid_pre",
           "hook_point_layer": 8, "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4},
           "normalize_activations": False, "model_name": "gpt2"}
    sae = corrsteer.SAE.load(write_saelens(tmp_path, w, cfg))
    assert sae.architecture == "topk" and sae.k == 4
    assert sae.apply_b_dec_to_input is True  # SAELens < 6 defaulted it to True
    assert (sae.layer, sae.site) == (8, "resid_pre")
    x = x_batch()
    want = reference.sae_encode(w | {"architecture": "topk", "k": 4, "apply_b_dec_to_input": True}, x)
    np.testing.assert_allclose(sae.encode(x), want, rtol=1e-5, atol=1e-5)


def test_saelens_standard_is_relu_and_log_threshold_is_exponentiated(tmp_path):
    w = weights()
    w.pop("threshold")
    sae = corrsteer.SAE.load(write_saelens(tmp_path, w, dict(V6_JUMPRELU, architecture="standard"), "std"))
    assert sae.architecture == "relu" and sae.threshold is None
    w["log_threshold"] = np.log(weights()["threshold"])
    sae = corrsteer.SAE.load(write_saelens(tmp_path, w, V6_JUMPRELU, "logt"))
    np.testing.assert_allclose(sae.threshold, weights()["threshold"], rtol=1e-6)


def test_saelens_rescale_acts_by_decoder_norm_is_folded_exactly(tmp_path):
    w = weights()
    w.pop("threshold")
    w["W_dec"] *= np.linspace(0.5, 2.0, D_SAE, dtype=np.float32)[:, None]
    cfg = dict(V6_JUMPRELU, architecture="topk", k=5, rescale_acts_by_decoder_norm=True)
    sae = corrsteer.SAE.load(write_saelens(tmp_path, w, cfg))
    x = x_batch()
    norms = np.linalg.norm(w["W_dec"].astype(np.float64), axis=1)
    pre = (x @ w["W_enc"] + w["b_enc"]) * norms           # SAELens encode
    keep = np.argsort(-pre, axis=1, kind="stable")[:, :5]
    f = np.zeros_like(pre)
    np.put_along_axis(f, keep, np.maximum(np.take_along_axis(pre, keep, 1), 0), 1)
    x_hat = (f / norms) @ w["W_dec"] + w["b_dec"]         # SAELens decode
    np.testing.assert_allclose(sae.encode(x), f, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sae.decode(sae.encode(x)), x_hat, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(sae.W_dec, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("field,value,match", [
    ("normalize_activations", "expected_average_only_in", "normalize_activations"),
    ("hook_head_index", 3, "hook_head_index"),
    ("architecture", "gated", "architecture"),
    ("reshape_activations", "hook_z", "reshape_activations"),
    ("d_sae", D_SAE + 1, "d_sae"),
])
def test_saelens_options_that_change_the_math_are_refused(tmp_path, field, value, match):
    with pytest.raises(CorrsteerError, match=match) as info:
        corrsteer.SAE.load(write_saelens(tmp_path, weights(), dict(V6_JUMPRELU, **{field: value})))
    assert "cfg.json" in str(info.value)


def test_saelens_attention_hook_z_is_refused(tmp_path):
    cfg = dict(V6_JUMPRELU, metadata={"hook_name": "blocks.3.attn.hook_z"})
    with pytest.raises(CorrsteerError, match="hook_z"):
        corrsteer.SAE.load(write_saelens(tmp_path, weights(), cfg))


def test_save_load_round_trip_keeps_weights_hook_and_meta(tmp_path):
    w = weights()
    sae = corrsteer.SAE(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], architecture="topk", k=6,
                        hook_name="blocks.9.hook_resid_post", model_name="tiny",
                        meta={"metrics": {"explained_variance": 0.81, "l0": 6.0}})
    out = (sae).save(tmp_path / "ours")
    cfg = json.loads((out / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["k"], cfg["hook_name"], cfg["hook_layer"]) == \
        ("topk", 6, "blocks.9.hook_resid_post", 9)
    assert cfg["corrsteer"]["metrics"]["explained_variance"] == 0.81
    back = corrsteer.SAE.load(out)
    x = x_batch()
    np.testing.assert_array_equal(back.encode(x), sae.encode(x))
    assert (back.layer, back.k, back.meta["format"]) == (9, 6, "corrsteer")
    assert back.meta["metrics"]["l0"] == 6.0 and back.model_name == "tiny"
    (back).save(out)  # overwrite in place
    with pytest.raises(FileExistsError):
        (back).save(out, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours"]  # no temp dirs left


def test_sae_load_and_save_methods_delegate_here(tmp_path):
    d = write_gs2(tmp_path, weights())
    sae = corrsteer.SAE.load(d)
    assert sae.layer == 4
    sae.save(tmp_path / "copy")
    np.testing.assert_array_equal(corrsteer.SAE.load(tmp_path / "copy").W_enc, sae.W_enc)


def test_missing_key_names_file_and_tensor(tmp_path):
    w = weights()
    w.pop("W_dec")
    with pytest.raises(CorrsteerError, match="W_dec") as info:
        corrsteer.SAE.load(write_gs1(tmp_path, w))
    assert "params.npz" in str(info.value)


def test_wrong_shape_names_file_and_field(tmp_path):
    w = weights()
    w["b_enc"] = w["b_enc"][:-1]
    with pytest.raises(CorrsteerError, match=r"b_enc has shape \(19,\), expected \(20,\)") as info:
        corrsteer.SAE.load(write_saelens(tmp_path, w, V6_JUMPRELU))
    assert "sae_weights.safetensors" in str(info.value)


def test_d_model_mismatch_is_a_value_error_naming_both_widths(tmp_path):
    d = write_gs1(tmp_path, weights())
    with pytest.raises(ValueError, match=f"d_in={D_IN}.*d_model=640"):
        corrsteer.SAE.load(d, d_model=640)
    assert corrsteer.SAE.load(d, d_model=D_IN).d_in == D_IN


def test_truncated_safetensors_is_reported(tmp_path):
    d = write_gs2(tmp_path, weights())
    f = d / "params.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CorrsteerError, match="truncated") as info:
        corrsteer.SAE.load(d)
    assert "params.safetensors" in str(info.value)
    f.write_bytes(b"\x05\x00")
    with pytest.raises(CorrsteerError, match="params.safetensors: not a readable safetensors file"):
        corrsteer.SAE.load(d)


def test_truncated_npz_and_corrupt_json_are_reported(tmp_path):
    d = write_gs1(tmp_path, weights())
    f = d / "params.npz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CorrsteerError, match="truncated or corrupt"):
        corrsteer.SAE.load(d)
    d = write_saelens(tmp_path, weights(), V6_JUMPRELU)
    (d / "cfg.json").write_text('{"architecture": "jumprelu", ')
    with pytest.raises(CorrsteerError, match="cfg.json: not valid JSON"):
        corrsteer.SAE.load(d)


def test_nan_weights_and_missing_paths(tmp_path):
    w = weights()
    w["W_enc"][0, 0] = np.nan
    with pytest.raises(CorrsteerError, match="W_enc.*NaN"):
        corrsteer.SAE.load(write_gs1(tmp_path, w))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        corrsteer.SAE.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no SAE found"):
        corrsteer.SAE.load(tmp_path / "empty")


def test_bfloat16_safetensors_are_widened_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    t = torch.randn(7, 5).to(torch.bfloat16)
    save_torch({"a": t}, str(tmp_path / "w.safetensors"))
    got = read_safetensors(tmp_path / "w.safetensors")["a"]
    np.testing.assert_array_equal(got, t.float().numpy())


@pytest.mark.parametrize("name,want", [
    ("blocks.12.hook_resid_post", (12, "resid_post")),
    ("blocks.0.hook_resid_pre", (0, "resid_pre")),
    ("blocks.3.hook_mlp_out", (3, "mlp_out")),
    ("model.layers.17.output", (17, "resid_post")),
    ("model.language_model.layers.5.output", (5, "resid_post")),
    ("model.layers.5.input", (5, "resid_pre")),
    ("model.layers.5.post_feedforward_layernorm.output", (5, "mlp_out")),
])
def test_parse_hook_name(name, want):
    assert parse_hook_name(name) == want


@pytest.mark.parametrize("name", ["blocks.3.attn.hook_z", "hook_embed",
                                  "model.layers.5.self_attn.o_proj.input",
                                  "model.layers.5.pre_feedforward_layernorm.output"])
def test_parse_hook_name_refuses_unsupported_sites(name):
    with pytest.raises(CorrsteerError, match="not a site"):
        parse_hook_name(name, source="cfg.json")


def test_hook_name_for():
    assert hook_name_for(4) == "blocks.4.hook_resid_post"
    assert hook_name_for(None) is None
    with pytest.raises(ValueError, match="site"):
        hook_name_for(1, "residual")


def test_hub_offline_fails_fast_with_clear_message(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(CorrsteerError, match="HF_HUB_OFFLINE"):
        corrsteer.SAE.from_pretrained("google/gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82",
                          cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 10


def test_hub_unreachable_fails_fast(tmp_path, monkeypatch):
    hf = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", False)
    t0 = time.perf_counter()
    with pytest.raises(CorrsteerError, match="cannot reach"):
        corrsteer.SAE.from_pretrained("gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82",
                          cache_dir=tmp_path, endpoint="http://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t0 < 10


def test_hub_release_names(tmp_path):
    # a bare name that is neither a repo id nor a SAELens release (SAELens' names resolve when sae-lens is
    # installed: tests/test_saelens.py)
    with pytest.raises(ValueError, match="repo id.*SAELens release name"):
        corrsteer.SAE.from_pretrained("not-a-release-name", "blocks.8.hook_resid_pre", cache_dir=tmp_path)
