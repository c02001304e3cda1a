"""TopK SAE trainer, activation harvest and the cached default SAEs, on synthetic data and tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import corrsteer
from corrsteer.cli import main
from corrsteer.sae import defaults
from corrsteer.sae.harvest import harvest, load_texts
from corrsteer.sae.train import evaluate_sae, fold_to_raw, train_sae


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny shapes here run fastest single-threaded (and much faster on a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sparse_data(n: int = 12000, d: int = 24, n_feat: int = 48, active: int = 3, seed: int = 0,
                offset: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Tokens built from a ground-truth dictionary: each row mixes ~``active`` unit features."""
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(n_feat, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = (rng.random((n, n_feat)) < active / n_feat) * rng.exponential(1.0, (n, n_feat))
    return (Z @ D + offset).astype(np.float32), D


def ev(sae: object, x: np.ndarray) -> float:
    x_hat = sae.decode(sae.encode(x))
    return 1 - float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def test_trains_to_high_explained_variance_with_unit_decoder_and_l0_k():
    x, _ = sparse_data()
    sae, m = train_sae(x, d_sae=96, k=6, steps=250, batch_size=256, lr=4e-3, progress=False)
    assert m["explained_variance"] > 0.85, m
    assert sae.architecture == "topk" and sae.k == 6 and sae.apply_b_dec_to_input is False
    np.testing.assert_allclose(np.linalg.norm(sae.W_dec, axis=1), 1.0, atol=1e-5)
    assert 5.0 <= m["l0"] <= 6.0, m
    f = sae.encode(x[:500])
    assert ((f > 0).sum(1) <= 6).all()
    # the metrics describe the saved weights: recompute EV with the SAE's own encode/decode
    assert abs(ev(sae, x[:3000]) - m["explained_variance"]) < 0.03
    assert sae.meta["metrics"] == m and sae.meta["config"]["k"] == 6


def test_evaluate_counts_dead_latents_and_l0_exactly():
    # 4 latents; latent 3 has a huge negative bias so it is never in the top-2 with a positive value
    W_enc = torch.eye(3, 4)
    b_enc = torch.tensor([0.0, 0.0, 0.0, -100.0])
    W_dec = torch.eye(4, 3)
    x = torch.tensor([[1.0, 2.0, -5.0], [3.0, -1.0, -5.0], [-1.0, -1.0, 2.0]])
    m = evaluate_sae(W_enc, b_enc, W_dec, torch.zeros(3), 2, x)
    # positive top-2 entries per row: row0 {1,0}, row1 {0}, row2 {2}; latent 3 never fires
    assert m["dead_fraction"] == 0.25
    assert m["l0"] == pytest.approx(4 / 3)
    x_hat = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    want = 1 - float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert m["explained_variance"] == pytest.approx(want, rel=1e-6)


def test_auxk_trains_latents_that_never_fire():
    # Constructed case: many latents, k=1 and a short dead window, so that after the first
    # step most latents count as dead. Without AuxK a dead latent gets no gradient and its
    # encoder column stays exactly at its initial value; AuxK moves those columns.
    x, _ = sparse_data(n=4000, d=16, n_feat=8, active=2, seed=3)
    kw = dict(d_sae=64, k=1, batch_size=256, lr=1e-2, dead_tokens=1, seed=4, progress=False)
    init, _ = train_sae(x, steps=0, **kw)
    plain, _ = train_sae(x, steps=6, aux_coef=0.0, **kw)
    aux, _ = train_sae(x, steps=6, **kw)
    frozen = np.all(plain.W_enc == init.W_enc, axis=0)  # latents never selected without AuxK
    assert frozen.sum() >= 16, frozen.sum()
    moved = np.any(aux.W_enc[:, frozen] != init.W_enc[:, frozen], axis=0)
    assert moved.mean() > 0.5, moved.mean()


def test_same_seed_same_weights_other_seed_different():
    x, _ = sparse_data(n=3000)
    kw = dict(d_sae=32, k=4, steps=40, batch_size=256, progress=False)
    a, ma = train_sae(x, seed=5, **kw)
    b, mb = train_sae(x, seed=5, **kw)
    c, _ = train_sae(x, seed=6, **kw)
    np.testing.assert_array_equal(a.W_enc, b.W_enc)
    np.testing.assert_array_equal(a.b_dec, b.b_dec)
    assert ma["explained_variance"] == mb["explained_variance"]
    assert not np.array_equal(a.W_enc, c.W_enc)


def test_fold_to_raw_is_exact():
    g = torch.Generator().manual_seed(0)
    d, S, k, scale = 10, 30, 5, 0.037
    W_enc, b_enc = torch.randn(d, S, generator=g), torch.randn(S, generator=g)
    W_dec, b_dec = torch.randn(S, d, generator=g), torch.randn(d, generator=g)
    x = torch.randn(50, d, generator=g, dtype=torch.float64) * 20
    # the SAE in training space: encode s·x with b_dec subtracted, decode, divide by s
    pre = ((scale * x) - b_dec.double()) @ W_enc.double() + b_enc.double()
    v, i = torch.topk(pre, k, dim=1)
    f = torch.zeros_like(pre).scatter_(1, i, v.clamp_min(0))
    x_hat = (f @ W_dec.double() + b_dec.double()) / scale
    Wr, br, Wdr, bdr = (t.double() for t in fold_to_raw(W_enc, b_enc, W_dec, b_dec, scale))
    pre_r = x @ Wr + br
    v_r, i_r = torch.topk(pre_r, k, dim=1)
    assert torch.equal(i_r, i)
    f_r = torch.zeros_like(pre_r).scatter_(1, i_r, v_r.clamp_min(0))
    torch.testing.assert_close(f_r, f / scale, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f_r @ Wdr + bdr, x_hat, rtol=1e-5, atol=1e-5)


def test_normalisation_is_folded_so_the_sae_works_on_raw_scale():
    x, _ = sparse_data(n=6000)
    kw = dict(d_sae=64, k=4, steps=200, batch_size=512, lr=3e-3, seed=2, progress=False)
    small, m_small = train_sae(x, **kw)
    big, m_big = train_sae(x * 1000, **kw)
    assert m_big["scale"] == pytest.approx(m_small["scale"] / 1000, rel=1e-5)
    assert m_big["explained_variance"] == pytest.approx(m_small["explained_variance"], abs=0.02)
    assert ev(big, x[:2000] * 1000) > 0.8  # raw, unscaled inputs
    np.testing.assert_allclose(big.b_dec, small.b_dec * 1000, rtol=0.05, atol=20)


def test_save_load_round_trip_gives_identical_encodes(tmp_path):
    x, _ = sparse_data(n=3000)
    sae, m = train_sae(x, d_sae=32, k=4, steps=30, batch_size=256, progress=False, layer=2)
    assert sae.hook_name == "blocks.2.hook_resid_post"
    (sae).save(tmp_path / "sae")
    back = corrsteer.SAE.load(tmp_path / "sae")
    np.testing.assert_array_equal(back.encode(x[:200]), sae.encode(x[:200]))
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["corrsteer"]["metrics"]["explained_variance"] == m["explained_variance"]
    assert back.meta["metrics"]["dead_fraction"] == m["dead_fraction"]


@pytest.mark.parametrize("bad,err,match", [
    (np.zeros((10, 4), dtype=np.int64), TypeError, "float"),
    (np.full((10, 4), np.nan, dtype=np.float32), ValueError, "NaN"),
    (np.zeros(10, dtype=np.float32), ValueError, "n_tok, d_in"),
    ([[1.0, 2.0]], TypeError, "numpy array or torch tensor"),
])
def test_train_rejects_bad_activations(bad, err, match):
    with pytest.raises(err, match=match):
        train_sae(bad, d_sae=8, k=2, steps=1, progress=False)


def test_train_rejects_bad_sizes():
    x, _ = sparse_data(n=200)
    with pytest.raises(ValueError, match="k <= d_sae"):
        train_sae(x, d_sae=4, k=5, steps=1, progress=False)
    with pytest.raises(ValueError, match="held-out"):
        train_sae(x[:3], d_sae=4, k=2, steps=1, holdout=0.01, progress=False)


def manual_hidden(model, tok, texts, layer):
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states[layer + 1]
    keep = enc["attention_mask"].bool() & (enc["input_ids"] != tok.bos_token_id)
    return hs[keep].numpy(), int(enc["attention_mask"].sum())


def test_harvest_equals_hidden_states_and_drops_bos_and_padding(tiny_model, tiny_tokenizer):
    texts = ["hello world", "a", "the quick brown fox"]  # different lengths: left padding
    acts = harvest(tiny_model, tiny_tokenizer, texts, [0, 1], max_tokens=10_000, batch_size=3,
                   progress=False)
    for layer in (0, 1):
        want, n_real = manual_hidden(tiny_model, tiny_tokenizer, texts, layer)
        assert acts[layer].shape == (sum(len(t) for t in texts), 32) == want.shape
        assert n_real == acts[layer].shape[0] + len(texts)  # exactly one BOS per text removed
        np.testing.assert_allclose(acts[layer], want, rtol=1e-5, atol=1e-5)
        assert acts[layer].dtype == np.float32



def test_harvest_drops_each_texts_first_position_whatever_the_padding(tiny_llama, tiny_tokenizer):
    # SmolLM2 has no BOS: its first word is the attention sink (norm ~150x the rest), so
    # harvest drops each text's first attended position even when no BOS id is known
    texts = ["hello world", "a", "the quick brown fox"]
    enc = tiny_tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        hs = tiny_llama(**enc, output_hidden_states=True).hidden_states[2]
    attn = enc["attention_mask"].bool()
    first = attn.long().argmax(dim=1)
    assert (first > 0).any()  # left padding: the first real position is not column 0 for every row
    keep = attn.clone()
    keep[torch.arange(len(texts)), first] = False
    from conftest import build_tiny_tokenizer

    for side in ("left", "right"):
        tok = build_tiny_tokenizer()  # its own: the session tokenizer must keep its BOS
        tok.padding_side = side
        tok.bos_token = None  # as for a tokenizer without BOS: only drop_first removes position 0
        acts = harvest(tiny_llama, tok, texts, [1], max_tokens=10_000, batch_size=3, progress=False)
        assert acts[1].shape == (int(attn.sum()) - len(texts), 32)
        if side == "left":
            np.testing.assert_allclose(acts[1], hs[keep].numpy(), rtol=1e-5, atol=1e-5)
        kept_all = harvest(tiny_llama, tok, texts, [1], max_tokens=10_000, batch_size=3, drop_first=False,
                           progress=False)
        assert kept_all[1].shape == (int(attn.sum()), 32)

def test_harvest_stops_at_max_tokens_and_checks_layers(tiny_llama, tiny_tokenizer):
    acts = harvest(tiny_llama, tiny_tokenizer, ["abcdefgh"] * 5, [1], max_tokens=12, batch_size=2,
                   progress=False)
    assert acts[1].shape == (12, 32)
    want, _ = manual_hidden(tiny_llama, tiny_tokenizer, ["abcdefgh"] * 2, 1)
    np.testing.assert_allclose(acts[1], want[:12], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        harvest(tiny_llama, tiny_tokenizer, ["abc"], [3], progress=False)
    with pytest.raises(ValueError, match="texts is empty"):
        harvest(tiny_llama, tiny_tokenizer, [], [0], progress=False)


def test_load_texts_from_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n{"id": 1, "body": "y"}\n')
    assert load_texts(tmp_path / "a.txt") == ["one", "two"]
    assert load_texts(str(tmp_path / "b.jsonl")) == ["x", "y"]
    (tmp_path / "c.jsonl").write_text('{"text": \n')
    with pytest.raises(ValueError, match="c.jsonl:1"):
        load_texts(tmp_path / "c.jsonl")
    with pytest.raises(FileNotFoundError):
        load_texts(tmp_path / "missing.txt")


TINY_DEFAULTS = dict(d_sae=16, k=2, n_tokens=300, epochs=2, batch_size=64, n_samples=3,
                     sample_tokens=5, n_per_dataset=4, max_length=32)


def test_default_saes_train_once_then_come_from_the_cache(tiny_gemma3, tiny_tokenizer, tmp_path,
                                                          monkeypatch):
    saes = defaults.train_default_saes(tiny_gemma3, tiny_tokenizer, [0, 2], cache_dir=tmp_path,
                                       progress=False, quality=None, **TINY_DEFAULTS)
    assert sorted(saes) == [0, 2]
    for layer, sae in saes.items():
        assert (sae.layer, sae.site, sae.hook_name) == (layer, "resid_post",
                                                        f"blocks.{layer}.hook_resid_post")
        assert 0 <= sae.meta["metrics"]["dead_fraction"] <= 1
    paths = sorted(tmp_path.glob("saes/*/*/layer_*/cfg.json"))
    assert len(paths) == 2

    def no_training(*a, **k):
        raise AssertionError("cache hit must not train")

    monkeypatch.setattr(defaults, "train_sae", no_training)
    again = defaults.train_default_saes(tiny_gemma3, tiny_tokenizer, [0, 2], cache_dir=tmp_path,
                                        progress=False, quality=None, **TINY_DEFAULTS)
    x = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
    for layer in (0, 2):
        np.testing.assert_array_equal(again[layer].encode(x), saes[layer].encode(x))
        assert again[layer].layer == layer
    other = defaults.cache_root(tiny_gemma3, defaults.DefaultSettings(**dict(TINY_DEFAULTS, k=3)),
                                tmp_path)
    assert other.parent == paths[0].parent.parent.parent and not other.exists()


def test_dataset_texts_reads_each_shared_dataset(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("1\tgood film\n0\tbad film\n")
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text('{"question": "2+2?", "answer": "#### 4"}\n')
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "test" / "x_test.csv").write_text(
        "question,choice0,choice1,choice2,choice3,answer\nQ?,a,b,c,d,0\n")
    (tmp_path / "bbq").mkdir()
    (tmp_path / "bbq" / "Age.jsonl").write_text('{"context": "Two people.", "question": "Who?"}\n\n')
    texts, files = defaults.dataset_texts(tmp_path, 5, seed=0)
    assert sorted(texts) == sorted(["Q? a b c d", "Two people. Who?", "good film", "bad film", "2+2?"])
    assert sorted(files) == ["bbq/Age.jsonl", "gsm8k/train.jsonl", "mmlu/test/x_test.csv", "sst2/train.tsv"]
    assert defaults.data_dir(tmp_path) == tmp_path


def test_main_train_rejects_bad_layers(capsys):
    assert main(["train-sae", "--layers", "a,b"]) == 2
    assert "--layers 'a,b' is not a list of layer indices" in capsys.readouterr().err


@pytest.mark.model
@pytest.mark.slow
def test_small_sae_on_the_embedded_model(tmp_path):
    from corrsteer.models import load_model

    model, tok = load_model("gemma-3-270m", device="cpu")
    texts, _ = defaults.dataset_texts(defaults.data_dir(), 30)
    acts = harvest(model, tok, texts, [6], max_tokens=3000, progress=False)
    assert acts[6].shape == (3000, 640)
    sae, m = train_sae(acts[6], d_sae=256, k=16, epochs=20, batch_size=256, lr=2e-3,
                       progress=False)
    assert m["explained_variance"] > 0.5, m
    (sae).save(tmp_path / "s")
    assert corrsteer.SAE.load(tmp_path / "s", d_model=640).d_sae == 256


def test_degenerate_sae_is_warned(caplog):
    from corrsteer.sae.train import warn_if_degenerate

    # SmolLM2 before harvest dropped the attention sink: EV 0.999 yet 97% of latents dead
    with caplog.at_level("WARNING", logger="corrsteer.sae.train"):
        assert warn_if_degenerate({"dead_fraction": 0.969, "explained_variance": 0.999}, "layer 12")
        assert not warn_if_degenerate({"dead_fraction": 0.164, "explained_variance": 0.944}, "layer 6")
    assert "layer 12 has 97% dead latents (EV 0.999): it is degenerate" in caplog.text
    assert "use fewer latents or more tokens" in caplog.text  # the fix the 16k ablation supports (README)
    assert "layer 6" not in caplog.text


def test_progress_bar_raises_no_warning():
    # pytest turns warnings into errors: float() of a grad-requiring loss used to warn on every bar update
    x, _ = sparse_data(n=300)
    train_sae(x, d_sae=16, k=4, steps=12, progress=True)
