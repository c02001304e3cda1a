"""Label correlation (corrsteer.studies.labels) and SAE comparison (corrsteer.studies.sae_comparison).

Tiny random models and SAEs from conftest; every expected value is computed by hand:
a forward pass per text with ``output_hidden_states``, BOS dropped, the pure-NumPy
``corrsteer.core.reference`` encoder, a max/mean over tokens and ``scipy.stats.pearsonr``
against the one-vs-rest label.
"""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
import torch
from scipy import stats

from corrsteer.cli import main
from corrsteer.cli.labels import parse_sae_sets
from corrsteer.core import reference
from corrsteer.studies.labelled import check_labelled, load_labelled
from corrsteer.studies.labels import LabelCorrelations, label_correlations, pool_texts
from corrsteer.studies.sae_comparison import compare_saes

LABELS3 = ("a", "b", "c")


def random_texts(n: int, seed: int, lo: int = 2, hi: int = 14) -> list[str]:
    rng = np.random.default_rng(seed)
    chars = list(string.ascii_letters + " .,!")
    return ["".join(rng.choice(chars, size=int(rng.integers(lo, hi)))).strip() or "x" for _ in range(n)]


def manual_pooled(model, tokenizer, sae, layer: int, texts: list[str], pool: str, site: str = "resid_post",
                  drop_bos: bool = True, drop_first: bool = False) -> np.ndarray:
    """(n_texts, d_sae): each text alone, hidden_states at the site, BOS dropped, reference encode + pool."""
    rows = []
    for text in texts:
        enc = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        x = hs[layer + 1 if site == "resid_post" else layer][0].float().numpy()  # (n_tok, d_model)
        if drop_bos:
            assert enc["input_ids"][0, 0] == tokenizer.bos_token_id
            x = x[1:]
        elif drop_first:
            x = x[1:]
        f = reference.sae_encode(sae, x)  # (n_tok, d_sae)
        rows.append(f.max(axis=0) if pool == "max" else f.mean(axis=0))
    return np.stack(rows)


def pearson_or_zero(z: np.ndarray, y: np.ndarray) -> float:
    return 0.0 if np.ptp(z) == 0 else float(stats.pearsonr(z, y)[0])


@pytest.fixture
def two_saes(make_tiny_sae):
    # Not the last layer: transformers' last hidden_states entry is after the final norm, the site is before it.
    return {0: make_tiny_sae(32, 48, "relu", seed=1, layer=0), 1: make_tiny_sae(32, 40, "topk", seed=2, layer=1)}


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_label_accumulators_equal_manual_scipy(tiny_llama, tiny_tokenizer, two_saes, pool):
    texts = random_texts(14, seed=3)
    labels = [LABELS3[i % 3] for i in range(14)]
    lc = label_correlations(tiny_llama, tiny_tokenizer, two_saes, texts, labels, pool=pool, batch_size=5,
                            progress=False)
    assert lc.labels == list(LABELS3) and lc.layers == [0, 1] and lc.n == 14
    for layer, sae in two_saes.items():
        z = manual_pooled(tiny_llama, tiny_tokenizer, sae, layer, texts, pool)
        with_bos = manual_pooled(tiny_llama, tiny_tokenizer, sae, layer, texts, pool, drop_bos=False)
        assert not np.allclose(z, with_bos, atol=1e-3), "BOS must make a difference for this check to bite"
        for label in LABELS3:
            y = np.array([lab == label for lab in labels], np.float64)
            acc = lc.accumulators[label][layer]
            expect = np.array([pearson_or_zero(z[:, j], y) for j in range(sae.d_sae)])
            np.testing.assert_allclose(acc.correlation(), expect, atol=2e-5, err_msg=f"layer {layer} {label} {pool}")
            np.testing.assert_allclose(acc.coefficient(), z[y == 1].mean(axis=0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(acc.frequency(), (z > 0).mean(axis=0))
            top = lc.top(label, layer, k=3)
            for row in top:
                j = row["index"]
                assert row["r"] == pytest.approx(expect[j], abs=2e-5)
                assert row["frequency_label"] == pytest.approx((z[y == 1, j] > 0).mean())



def test_first_position_is_not_pooled_without_bos(tiny_llama, two_saes):
    # a tokenizer that adds no BOS (SmolLM2): the first word is the attention sink and is skipped
    from conftest import build_tiny_tokenizer
    from tokenizers import processors

    tok = build_tiny_tokenizer()
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    texts = random_texts(6, seed=5, lo=3)
    assert tok(texts[:1])["input_ids"][0][0] != tok.bos_token_id
    got = pool_texts(tiny_llama, tok, two_saes, texts, pool="max", batch_size=4)
    for layer, sae in two_saes.items():
        want = manual_pooled(tiny_llama, tok, sae, layer, texts, "max", drop_bos=False, drop_first=True)
        np.testing.assert_allclose(got[layer], want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="first position"):
        pool_texts(tiny_llama, tok, two_saes, ["a"], pool="max")

def test_resid_pre_site_reads_layer_input(tiny_llama, tiny_tokenizer, make_tiny_sae):
    sae = make_tiny_sae(32, 24, "jumprelu", seed=4, layer=1, site="resid_pre")
    texts = random_texts(6, seed=5)
    z = pool_texts(tiny_llama, tiny_tokenizer, {1: sae}, texts, batch_size=4)[1]
    np.testing.assert_allclose(z, manual_pooled(tiny_llama, tiny_tokenizer, sae, 1, texts, "max", site="resid_pre"),
                               atol=2e-5)


def test_one_vs_rest_labels_partition(tiny_llama, tiny_tokenizer, two_saes):
    texts = random_texts(12, seed=6)
    labels = ["x", "y", "z", "x", "x", "y", "z", "z", "x", "y", "x", "x"]
    lc = label_correlations(tiny_llama, tiny_tokenizer, two_saes, texts, labels, batch_size=4, progress=False)
    assert lc.counts == {"x": 6, "y": 3, "z": 3}
    for layer in lc.layers:
        accs = [lc.accumulators[k][layer] for k in lc.labels]
        assert all(a.n == 12 for a in accs)
        assert sum(a.n_positive for a in accs) == 12
        # The label indicators sum to 1, so the covariances with z sum to 0 for every feature.
        sd_y = [np.sqrt(a.n_positive / 12 * (1 - a.n_positive / 12)) for a in accs]
        np.testing.assert_allclose(sum(a.correlation() * s for a, s in zip(accs, sd_y)), 0.0, atol=1e-6)
    two = label_correlations(tiny_llama, tiny_tokenizer, two_saes, texts, ["p" if x == "x" else "q" for x in labels],
                             progress=False)
    np.testing.assert_allclose(two.accumulators["p"][1].correlation(), -two.accumulators["q"][1].correlation(),
                               atol=1e-12)


def test_pooled_z_is_padding_invariant(tiny_model, tiny_tokenizer, make_tiny_sae):
    saes = {1: make_tiny_sae(32, 32, "relu", seed=7, layer=1), 2: make_tiny_sae(32, 32, "topk", seed=8, layer=2)}
    target = "The cat sat on the mat."
    batch = ["a", target, "a much longer text that pads the others in its batch, by far", "hi there"]
    alone = pool_texts(tiny_model, tiny_tokenizer, saes, [target])
    together = pool_texts(tiny_model, tiny_tokenizer, saes, batch, batch_size=4)
    for layer in saes:
        np.testing.assert_allclose(together[layer][1], alone[layer][0], rtol=1e-5, atol=1e-5, err_msg=f"layer {layer}")
        assert np.abs(together[layer][0] - alone[layer][0]).max() > 1e-3  # rows are not all the same


def test_keep_groups_equals_subset_alone(tiny_llama, tiny_tokenizer, two_saes):
    texts = random_texts(12, seed=9)
    labels = ["s", "n"] * 6
    groups = ["g1", "g1", "g2", "g2", "g3", "g3"] * 2
    lc = label_correlations(tiny_llama, tiny_tokenizer, two_saes, texts, labels, groups=groups,
                            keep_groups={"g1", "g3"}, progress=False)
    keep = [i for i, g in enumerate(groups) if g != "g2"]
    sub = label_correlations(tiny_llama, tiny_tokenizer, two_saes, [texts[i] for i in keep],
                             [labels[i] for i in keep], progress=False)
    assert lc.n == 8 and lc.meta["group_counts"] == {"g1": 4, "g3": 4}
    for k in ("s", "n"):
        np.testing.assert_allclose(lc.accumulators[k][0].correlation(), sub.accumulators[k][0].correlation(),
                                   atol=1e-6)


def test_save_load_roundtrip_and_table(tiny_llama, tiny_tokenizer, two_saes, tmp_path):
    texts = random_texts(10, seed=10)
    labels = ["neg", "pos"] * 5
    lc = label_correlations(tiny_llama, tiny_tokenizer, two_saes, texts, labels, null_seed=1, progress=False)
    lc.save(tmp_path / "run", k=4)
    back = LabelCorrelations.load(tmp_path / "run")
    assert back.counts == lc.counts and back.layers == lc.layers and back.meta == lc.meta
    for k in lc.labels:
        for layer in lc.layers:
            np.testing.assert_array_equal(back.accumulators[k][layer].correlation(),
                                          lc.accumulators[k][layer].correlation())
            np.testing.assert_array_equal(back.null[k][layer].correlation(), lc.null[k][layer].correlation())
    table = back.table(k=2)
    assert table == lc.table(k=2)
    assert {"label", "layer", "rank", "index", "r", "coefficient", "frequency"} <= set(table[0])
    summary = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert summary["counts"] == {"neg": 5, "pos": 5} and len(summary["top"]) <= 2 * 2 * 4
    (tmp_path / "run" / summary["files"]["labels"]["pos"]["1"]).unlink()
    with pytest.raises(ValueError, match="is missing"):
        LabelCorrelations.load(tmp_path / "run")


def test_best_and_null(tiny_llama, tiny_tokenizer, two_saes):
    texts = random_texts(16, seed=11)
    labels = ["u", "v"] * 8
    lc = label_correlations(tiny_llama, tiny_tokenizer, two_saes, texts, labels, null_seed=3, progress=False)
    best = lc.best("u")
    all_r = {layer: lc.accumulators["u"][layer].correlation() for layer in lc.layers}
    assert abs(best["r"]) == pytest.approx(max(np.abs(r).max() for r in all_r.values()))
    assert all_r[best["layer"]][best["index"]] == best["r"]
    assert lc.null["u"][0].n_positive == 8 and lc.best("u", null=True)["layer"] in lc.layers
    chance = lc.chance("u", 1)
    assert chance == float(lc.null["u"][1].correlation().max())
    assert f"L1 {chance:+.3f}" in lc.markdown() and "labels shuffled (seed 3)" in lc.markdown()
    plain = label_correlations(tiny_llama, tiny_tokenizer, two_saes, texts, labels, progress=False)
    with pytest.raises(ValueError, match="null_seed"):
        plain.best("u", null=True)
    assert "Chance level" not in plain.markdown()


def test_label_errors(tiny_llama, tiny_tokenizer, two_saes, make_tiny_sae):
    texts = random_texts(4, seed=12)
    run = lambda t, y, **kw: label_correlations(tiny_llama, tiny_tokenizer, kw.pop("saes", two_saes), t, y,
                                                progress=False, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="at least two labels"):
        run(texts, ["a"] * 4)
    with pytest.raises(ValueError, match="one label per text"):
        run(texts, ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        run(texts[:3] + ["  "], ["a", "b"] * 2)
    with pytest.raises(TypeError, match="must be str"):
        run(texts[:3] + [5], ["a", "b"] * 2)
    with pytest.raises(ValueError, match="texts is empty"):
        run([], [])
    with pytest.raises(ValueError, match="pool"):
        run(texts, ["a", "b"] * 2, pool="median")
    with pytest.raises(ValueError, match="d_in=16"):
        run(texts, ["a", "b"] * 2, saes={1: make_tiny_sae(16, 8, layer=1)})
    with pytest.raises(ValueError, match="layer must be an int in 0..2"):
        run(texts, ["a", "b"] * 2, saes={5: make_tiny_sae(32, 8)})
    with pytest.raises(ValueError, match="key it by its own layer"):
        run(texts, ["a", "b"] * 2, saes={0: make_tiny_sae(32, 8, layer=1)})
    with pytest.raises(ValueError, match="keep_groups needs groups"):
        run(texts, ["a", "b"] * 2, keep_groups={"g"})
    with pytest.raises(ValueError, match="batch_size"):
        run(texts, ["a", "b"] * 2, batch_size=0)


# ----------------------------------------------------------------------------- data


def write_csv(path, rows: list[tuple[str, str, str]]) -> str:
    lines = ["text,label,grp"] + [f'"{t}",{y},{g}' for t, y, g in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_load_labelled_file_draw_and_groups(tmp_path):
    rows = [(f"text number {i}", ["pos", "neg"][i % 2], ["g1", "g2", "g3"][i % 3]) for i in range(30)]
    path = write_csv(tmp_path / "d.csv", rows)
    full = load_labelled(path)
    assert full.texts[3] == "text number 3" and full.labels[:2] == ["pos", "neg"] and full.groups is None
    a = load_labelled(path, n=10, seed=4, group_column="grp")
    b = load_labelled(path, n=10, seed=4, group_column="grp")
    c = load_labelled(path, n=10, seed=5, group_column="grp")
    assert a.texts == b.texts and a.texts != c.texts and len(set(a.texts)) == 10
    assert all(t in full.texts for t in a.texts)
    g = load_labelled(path, group_column="grp", groups={"g2"})
    assert len(g.texts) == 10 and set(g.groups) == {"g2"}
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"sentence": t, "y": y}) for t, y, _ in rows))
    assert load_labelled(str(jsonl), text_column="sentence", label_column="y").labels == full.labels


def test_load_labelled_errors(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("one", "a", "g"), ("two", "b", "g")])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['sentence'\]"):
        load_labelled(path, text_column="sentence")
    with pytest.raises(ValueError, match="no rows"):
        load_labelled(write_csv(tmp_path / "empty.csv", []))
    with pytest.raises(ValueError, match="at least two labels"):
        load_labelled(write_csv(tmp_path / "one.csv", [("x", "a", "g"), ("y", "a", "g")]))
    with pytest.raises(ValueError, match="n=5 but"):
        load_labelled(path, n=5)
    with pytest.raises(ValueError, match="needs a group column"):
        load_labelled(path, groups={"g"})
    with pytest.raises(ValueError, match="no row of"):
        load_labelled(path, group_column="grp", groups={"nope"})
    with pytest.raises(ValueError, match="applies to"):
        load_labelled(path, split="train")
    with pytest.raises(ValueError, match=r"keep_labels \['c'\] not in .*its labels: \['a', 'b'\]"):
        load_labelled(path, keep_labels={"a", "c"})
    with pytest.raises(ValueError, match="at least two labels"):
        load_labelled(path, keep_labels={"a"})
    with pytest.raises(ValueError, match="does not exist"):
        load_labelled(str(tmp_path / "absent.csv"))
    with pytest.raises(TypeError, match="not a single str"):
        check_labelled("abc", ["a", "b", "c"])


def test_load_builtin_emgsd_and_sst2():
    from corrsteer.tasks import get_task

    train = load_labelled("emgsd", n=300, seed=0)
    assert set(train.labels) == {"stereotype", "neutral", "unrelated"}
    assert {g for g, y in zip(train.groups, train.labels) if y == "unrelated"} == {"unrelated"}
    test_texts = {s.question for s in get_task("emgsd").splits()["test"]}
    assert not any(f'Sentence: "{t}"' in test_texts for t in train.texts)  # the task's test split stays unseen
    contrast = load_labelled("emgsd", keep_labels={"stereotype", "neutral"}, n=300, seed=0)
    assert set(contrast.labels) == {"stereotype", "neutral"} and "labels=neutral,stereotype" in contrast.source
    assert set(contrast.texts) <= set(load_labelled("emgsd").texts)
    gender = load_labelled("emgsd", split="all", groups={"gender"})
    assert len(gender.texts) == 884 and set(gender.labels) == {"stereotype", "neutral"}
    sst = load_labelled("sst2", split="validation")
    assert len(sst.texts) == 872 and set(sst.labels) == {"negative", "positive"}
    with pytest.raises(ValueError, match="split must be one of"):
        load_labelled("sst2", split="dev")


# ----------------------------------------------------------------------- SAE comparison


def test_compare_saes_table(tiny_llama, tiny_tokenizer, make_tiny_sae, tmp_path):
    set_a = {0: make_tiny_sae(32, 40, "relu", seed=20, layer=0), 2: make_tiny_sae(32, 40, "relu", seed=21, layer=2)}
    set_b = {1: make_tiny_sae(32, 24, "topk", seed=22, layer=1)}
    texts = random_texts(15, seed=13)
    labels = [LABELS3[i % 3] for i in range(15)]
    cmp = compare_saes(tiny_llama, tiny_tokenizer, {"A": set_a, "B": set_b}, texts, labels, batch_size=4,
                       progress=False)
    for name, saes in (("A", set_a), ("B", set_b)):
        alone = label_correlations(tiny_llama, tiny_tokenizer, saes, texts, labels, progress=False)
        for label in LABELS3:
            row = next(r for r in cmp.rows() if r["sae"] == name and r["label"] == label)
            expect = max(np.abs(alone.accumulators[label][l].correlation()).max() for l in saes)
            assert row["abs_r"] == pytest.approx(expect, abs=1e-6)
            assert row["chance"] is not None and 0 <= row["chance"] <= 1
    md = cmp.markdown().splitlines()
    assert md[0] == "| label | A | B |" and len(md) == 2 + 3 and md[2].startswith("| a | ")
    cmp.save(tmp_path / "cmp")
    assert LabelCorrelations.load(tmp_path / "cmp" / "B").layers == [1]
    with pytest.raises(ValueError, match="at least two"):
        compare_saes(tiny_llama, tiny_tokenizer, {"A": set_a}, texts, labels, progress=False)
    with pytest.raises(ValueError, match="NAME=default"):
        parse_sae_sets(["generic"])
    with pytest.raises(ValueError, match="given twice"):
        parse_sae_sets(["a=default", "a=train"])


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def saved_tiny(tiny_llama, tiny_tokenizer, make_tiny_sae, tmp_path):
    """A tiny model folder and two SAE folders on disk, for the command lines."""

    tiny_llama.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    paths = []
    for layer in (1, 2):
        sae = make_tiny_sae(32, 32, "relu", seed=30 + layer, layer=layer)
        (sae).save(tmp_path / f"sae{layer}")
        paths.append(str(tmp_path / f"sae{layer}"))
    rows = [(t, ["pos", "neg"][i % 2], "g") for i, t in enumerate(random_texts(20, seed=14, lo=4))]
    return tmp_path, str(tmp_path / "model"), ",".join(paths), write_csv(tmp_path / "data.csv", rows)


def test_cli_labels_smoke(saved_tiny, capsys):
    tmp, model, saes, data = saved_tiny
    out = tmp / "out"
    code = main(["labels", "--dataset", data, "--model", model, "--device", "cpu", "--sae", saes, "--n", "16",
                        "--top-k", "2", "--batch-size", "4", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "### neg (n=" in printed and "| layer | rank | feature | r |" in printed
    assert "Chance level, the top r with the labels shuffled (seed 0)" in printed
    assert (out / "labels.md").read_text().count("| 2 | 2 |") == 2  # layer 2, rank 2, for both labels
    back = LabelCorrelations.load(out)
    assert back.layers == [1, 2] and back.n == 16 and back.meta["sae"] == saes
    code = main(["labels", "--dataset", data, "--model", model, "--sae", saes, "--label-column", "nope",
                        "--out", str(out), "--no-progress"])
    assert code == 2 and "missing column(s) ['nope']" in capsys.readouterr().err


def test_cli_compare_saes_trains_a_text_sae(saved_tiny, capsys):
    tmp, model, saes, data = saved_tiny
    out = tmp / "cmp"
    code = main(["compare-saes", "--dataset", data, "--model", model, "--device", "cpu", "--layers", "1,2",
                              "--sae", f"given={saes}", "--sae", "text=train", "--train-d-sae", "16",
                              "--train-k", "4", "--train-tokens", "200", "--train-epochs", "2",
                              "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "| label | given | text |" in printed and "chance" in printed
    assert (out / "saes" / "text" / "layer_2").is_dir()
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert {(r["label"], r["sae"]) for r in rows} == {(y, s) for y in ("neg", "pos") for s in ("given", "text")}
    code = main(["compare-saes", "--dataset", data, "--model", model, "--sae", "only=default", "--no-progress"])
    assert code == 2 and "at least two --sae" in capsys.readouterr().err


# ------------------------------------------------------------------------ real model


@pytest.mark.model
def test_real_gemma_drops_bos_and_is_padding_invariant():
    """Gemma 3 270M: the tokenizer's BOS is excluded, a text's z is the same alone and in a batch."""
    from corrsteer.errors import CorrsteerError
    from corrsteer.models import load_model
    from corrsteer.models.embedded import EMBEDDED, locate_parts

    try:
        locate_parts(EMBEDDED["gemma-3-270m"])
    except CorrsteerError as exc:
        pytest.skip(f"embedded model not installed: {exc}")
    import corrsteer

    model, tok = load_model("gemma-3-270m", device="cpu", dtype="float32")
    rng = np.random.default_rng(0)
    W_enc = (rng.standard_normal((640, 64)) * 0.05).astype(np.float32)  # (d_in, d_sae)
    sae = corrsteer.SAE(W_enc, np.zeros(64, np.float32), np.ascontiguousarray(W_enc.T), np.zeros(640, np.float32),
                        architecture="relu", layer=3)
    texts = load_labelled("emgsd", n=5, seed=0).texts
    batch = pool_texts(model, tok, {3: sae}, texts, batch_size=5)[3]
    alone = pool_texts(model, tok, {3: sae}, [texts[0]])[3]
    np.testing.assert_allclose(batch[0], alone[0], rtol=1e-4, atol=1e-4)
    enc = tok([texts[0]], return_tensors="pt")
    assert int(enc["input_ids"][0, 0]) == tok.bos_token_id
    with torch.no_grad():
        x = model(**enc, output_hidden_states=True).hidden_states[4][0].numpy()  # (n_tok, d_model)
    f = reference.sae_encode(sae, x)
    np.testing.assert_allclose(alone[0], f[1:].max(axis=0), rtol=1e-4, atol=1e-4)
    assert f[0].max() > 2 * f[1:].max(), "Gemma's BOS position would dominate the max if it were pooled"
