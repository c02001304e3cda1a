"""Debiasing (corrsteer.studies.debiasing): label steering vectors, BBQ bias intervals, the table end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import corrsteer
from corrsteer.cli import main
from corrsteer.studies.debiasing import bias_intervals, debias, label_selection
from corrsteer.studies.labels import LabelCorrelations
from corrsteer.tasks.bbq import bias_scores

FIXTURES = str(Path(__file__).parent / "fixtures" / "tasks")
LABELS = ("stereotype", "neutral", "unrelated")


def fake_labels(saes: dict[int, Any], n: int = 90) -> LabelCorrelations:
    """One-vs-rest accumulators where feature 2 fires for 'neutral' and feature 5 for 'stereotype'."""
    rng = np.random.default_rng(0)
    lab = np.array([LABELS[i % 3] for i in range(n)])
    accs: dict[str, dict[int, Any]] = {k: {} for k in LABELS}
    for layer, sae in saes.items():
        z = np.maximum(rng.standard_normal((n, sae.d_sae)), 0).astype(np.float32)
        z[:, 2] += 2.0 * (lab == "neutral")
        z[:, 5] += 3.0 * (lab == "stereotype")
        for k in LABELS:
            acc = corrsteer.core.CorrelationAccumulator(sae.d_sae)
            acc.update(z, (lab == k).astype(np.float64))
            accs[k][layer] = acc
    return LabelCorrelations(accs, {k: int((lab == k).sum()) for k in LABELS}, {"source": "fake"})


@pytest.fixture
def saes(make_tiny_sae: Any) -> dict[int, Any]:
    return {l: make_tiny_sae(32, 16, "relu", seed=40 + l, layer=l) for l in (0, 2)}


def test_label_selection_adds_neutral_and_subtracts_stereotype(saes: dict[int, Any], tmp_path: Any) -> None:
    lc = fake_labels(saes)
    lc.save(tmp_path / "labels")
    sel = label_selection(tmp_path / "labels", saes, scale=2.0)
    assert sel.method == "labels" and sel.layers == [0, 2]
    for layer in (0, 2):
        plus = [f for f in sel.features if f.layer == layer and f.sign > 0]
        minus = [f for f in sel.features if f.layer == layer and f.sign < 0]
        assert [f.index for f in plus] == [2] and [f.index for f in minus] == [5]
        c_n = lc.accumulators["neutral"][layer].coefficient()[2]
        c_s = lc.accumulators["stereotype"][layer].coefficient()[5]
        W = saes[layer].W_dec
        np.testing.assert_allclose(sel.vectors()[layer], 2.0 * (c_n * W[2] - c_s * W[5]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="label 'toxic'"):
        label_selection(lc, saes, add="toxic")
    with pytest.raises(ValueError, match="layers"):
        label_selection(lc, saes, layers=[1])


def bbq_records(condition: str, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(60):
        target = 2 if condition == "ambig" else int(rng.integers(0, 2))
        out.append({"id": str(i), "category": "Age" if i % 2 else "Religion", "reward": 0,
                    "extracted": [None, 0, 1, 2][int(rng.integers(0, 4))], "context_condition": condition,
                    "question_polarity": "neg" if i % 3 else "nonneg", "unknown_index": 2,
                    "stereotyped_index": None if i % 7 == 0 else int(rng.integers(0, 2)), "target": target})
        out[-1]["reward"] = int(out[-1]["extracted"] == target)
    return out


@pytest.mark.parametrize("condition, key", [("ambig", "s_amb"), ("disambig", "s_dis")])
def test_bias_intervals_match_bbq_bias_scores(condition: str, key: str) -> None:
    recs = bbq_records(condition, seed=1)
    ref = bias_scores(recs)[condition]
    got = bias_intervals(recs, n_boot=500, seed=0)
    assert got["overall"]["score"] == pytest.approx(ref["overall"][key])
    for cat, entry in ref["per_category"].items():
        assert got[cat]["score"] == pytest.approx(entry[key]) and got[cat]["n"] == entry["n"]
        lo, hi = got[cat]["ci95"]
        assert lo <= got[cat]["score"] <= hi
    assert bias_intervals(recs, n_boot=500, seed=0) == got  # seeded
    with pytest.raises(ValueError, match="one BBQ context condition"):
        bias_intervals(recs + bbq_records("disambig" if condition == "ambig" else "ambig", 2))


def test_debias_end_to_end_on_bbq_and_emgsd_fixtures(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                                      saes: dict[int, Any]) -> None:
    sel = label_selection(fake_labels(saes), saes, scale=20.0)
    doc = debias(tiny_llama, tiny_tokenizer, {"labels": sel}, n_test=4, batch_size=4, data_dir=FIXTURES,
                 max_new_tokens=3, n_boot=200, progress=False, out_dir=tmp_path)
    assert set(doc["tasks"]) == {"bbq_ambig", "bbq_disambig", "emgsd"}
    for name, entry in doc["tasks"].items():
        row = entry["conditions"]["labels"]
        assert row["baseline"]["n"] == row["steered"]["n"] == entry["n"] > 0
        assert row["per_category"], name
        if name.startswith("bbq"):
            assert "overall" in entry["bias_baseline"] and "overall" in row["bias"]
    md = (tmp_path / "debias.md").read_text()
    assert "bbq_ambig / labels" in md and "s_amb" in md and "s_dis" in md and "emgsd: accuracy per category" in md
    f = doc["features"]["labels"][0]
    assert f"| labels | L{f['layer']} {'+' if f['sign'] > 0 else '−'}#{f['index']} (r={f['r']:+.3f}" in md
    assert (tmp_path / "figures" / "bbq_ambig_bias.png").is_file()
    assert (tmp_path / "figures" / "emgsd_labels_categories.png").is_file()
    assert json.loads((tmp_path / "debias.json").read_text())["tasks"]["emgsd"]["n"] == doc["tasks"]["emgsd"]["n"]
    with pytest.raises(ValueError, match="conditions is empty"):
        debias(tiny_llama, tiny_tokenizer, {}, data_dir=FIXTURES)


def test_cli_debias_with_labels_folder(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any, saes: dict[int, Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:

    model_dir = tmp_path / "model"
    tiny_llama.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    paths = ",".join(str((s).save(tmp_path / f"sae{l}")) for l, s in saes.items())
    fake_labels(saes).save(tmp_path / "labels")
    code = main(["debias", "--labels", str(tmp_path / "labels"), "--model", str(model_dir), "--sae", paths,
                 "--tasks", "bbq_ambig", "--n-test", "4", "--batch-size", "4", "--max-new-tokens", "2",
                 "--n-boot", "100", "--data-dir", FIXTURES, "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "bbq_ambig / labels" in printed.out and (tmp_path / "out" / "debias.md").is_file()
    assert main(["debias", "--model", str(model_dir)]) == 2
    assert "give --selection" in capsys.readouterr().err
