"""SAELens SAEs in corrsteer, checked against the real ``sae-lens`` package (the ``saelens`` extra).

SAELens SAEs of each architecture are built from a config with random weights; the converted
SAE must encode and decode as SAELens does (to 1e-5), its hook must name the site our hooks
attach to, and every corrsteer API that takes SAEs must accept the SAELens object itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import corrsteer
from corrsteer.errors import CorrsteerError

sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is an optional extra: bash scripts/install_extras.sh saelens")
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

D_IN, D_SAE = 32, 96


def lens_sae(arch: str, hook: str = "blocks.1.hook_resid_post", apply_b_dec: bool = True, seed: int = 0,
             **extra) -> object:
    """A SAELens SAE of ``arch`` ("standard" | "jumprelu" | "topk") with random weights, float32, CPU."""
    classes = {"standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig),
               "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig),
               "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig)}
    cls, cfg_cls = classes[arch]
    if arch == "topk":
        extra.setdefault("k", 12)
    cfg = cfg_cls(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec, dtype="float32", device="cpu",
                  metadata=SAEMetadata(hook_name=hook, model_name="tiny"), **extra)
    sae = cls(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if name.startswith("b_") else 1.0))
        if arch == "jumprelu":
            sae.threshold.copy_(torch.rand(D_SAE, generator=gen) * 2.0)  # gates a fair share of latents
    return sae.eval()


CASES = [("standard", {}), ("jumprelu", {}), ("topk", {}), ("topk", {"rescale_acts_by_decoder_norm": True})]


@pytest.mark.parametrize("arch, extra", CASES, ids=[f"{a}{'-rescaled' if e else ''}" for a, e in CASES])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_converted_sae_encodes_and_decodes_as_saelens(arch: str, extra: dict, apply_b_dec: bool) -> None:
    lens = lens_sae(arch, apply_b_dec=apply_b_dec, **extra)
    ours = corrsteer.SAE.from_sae_lens(lens)
    assert (ours.d_in, ours.d_sae, ours.architecture) == (D_IN, D_SAE, {"standard": "relu"}.get(arch, arch))
    assert ours.apply_b_dec_to_input is apply_b_dec and ours.meta["format"] == "sae_lens"
    x = np.random.default_rng(1).standard_normal((64, D_IN)).astype(np.float32)  # (n_tok, d_in)
    with torch.no_grad():
        want_f = lens.encode(torch.from_numpy(x)).numpy()
        want_x = lens.decode(torch.from_numpy(want_f)).numpy()
    got_f = ours.encode(x)
    assert 0.05 < (want_f > 0).mean() < 0.95, "the test input must activate some latents, not all"
    np.testing.assert_allclose(got_f, want_f, rtol=1e-5, atol=1e-5)
    # decode sums d_sae float32 terms of size ~10: compare to float32 rounding of the output's scale
    np.testing.assert_allclose(ours.decode(got_f), want_x, rtol=1e-5, atol=1e-6 * np.abs(want_x).max())


@pytest.mark.parametrize("hook, layer, site", [("blocks.2.hook_resid_post", 2, "resid_post"),
                                               ("blocks.1.hook_resid_pre", 1, "resid_pre"),
                                               ("blocks.0.hook_mlp_out", 0, "mlp_out")])
def test_the_hook_name_gives_the_layer_and_site(hook: str, layer: int, site: str) -> None:
    ours = corrsteer.SAE.from_sae_lens(lens_sae("jumprelu", hook=hook))
    assert (ours.layer, ours.site, ours.hook_name, ours.model_name) == (layer, site, hook, "tiny")


@pytest.mark.parametrize("hook, hidden_index", [("blocks.1.hook_resid_post", 2), ("blocks.1.hook_resid_pre", 1),
                                                ("blocks.0.hook_resid_post", 1)])
def test_capture_reads_a_saelens_sae_at_the_site_its_hook_names(tiny_llama, tiny_tokenizer, hook: str,
                                                                 hidden_index: int) -> None:
    """blocks.L.hook_resid_post is hidden_states[L + 1] (layer L's output); hook_resid_pre is hidden_states[L]."""
    lens = lens_sae("standard", hook=hook)
    enc = tiny_tokenizer(["2+2=4", "a cat sat"], return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = tiny_llama(**enc, output_hidden_states=True).hidden_states[hidden_index]  # (n_seq, n_tok, d)
        f = lens.encode(hidden)  # SAELens' own encode of the site's activations
        want = torch.where(enc["attention_mask"][..., None].bool(), f, torch.zeros_like(f)).amax(dim=1).numpy()
        with corrsteer.capture(tiny_llama, [lens], pool="max", positions="all") as cap:  # the SAELens object itself
            tiny_llama(**enc)
    layer = int(hook.split(".")[1])
    np.testing.assert_allclose(cap.result()[layer], want, rtol=1e-4, atol=1e-4)


def test_collect_and_select_take_saelens_saes(tiny_llama, tiny_tokenizer) -> None:
    from test_collection import ParityTask

    task = ParityTask()
    saes = {l: lens_sae("topk", hook=f"blocks.{l}.hook_resid_post", seed=l) for l in (0, 2)}
    col = corrsteer.collect(tiny_llama, tiny_tokenizer, task, saes, task.samples("train", 12), batch_size=6,
                            progress=False)
    sel = corrsteer.select(col, saes, mode="all")
    assert sorted(col.accumulators) == [0, 2]
    for f in sel.features:
        np.testing.assert_allclose(sel.directions[f.layer][0], saes[f.layer].W_dec[f.index].detach().numpy(),
                                   rtol=1e-6)


def test_a_hook_we_cannot_attach_to_is_refused_with_the_hook_named(tiny_llama) -> None:
    with pytest.raises(CorrsteerError, match="blocks.1.attn.hook_z.*not a site corrsteer can attach to"):
        corrsteer.SAE.from_sae_lens(lens_sae("standard", hook="blocks.1.attn.hook_z"))
    mlp = lens_sae("standard", hook="blocks.1.hook_mlp_out")
    with pytest.raises(ValueError, match="site 'mlp_out', which capture\\(\\)/steer\\(\\) cannot attach to"):
        corrsteer.capture(tiny_llama, [mlp])


def test_options_that_change_the_arithmetic_are_refused() -> None:
    lens = lens_sae("standard")
    lens.cfg.normalize_activations = "layer_norm"
    with pytest.raises(CorrsteerError, match="normalize_activations"):
        corrsteer.SAE.from_sae_lens(lens)
    with pytest.raises(TypeError, match="expected a sae_lens.SAE"):
        corrsteer.SAE.from_sae_lens(object())


def test_a_saelens_release_name_resolves_through_its_directory_and_fails_clearly_offline(monkeypatch,
                                                                                      tmp_path) -> None:
    from corrsteer.sae.saelens import lookup_release

    found = lookup_release("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical")
    assert (found.repo_id, found.path, found.readable) == ("google/gemma-scope-2b-pt-res",
                                                           "layer_12/width_16k/average_l0_82", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(CorrsteerError, match="google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82 is not "
                                             "in the local Hugging Face cache"):
        corrsteer.SAE.from_pretrained("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical",
                                      cache_dir=tmp_path)
    with pytest.raises(ValueError, match="has no SAE 'layer_99/nothing'"):
        corrsteer.SAE.from_pretrained("gemma-scope-2b-pt-res-canonical", "layer_99/nothing")
