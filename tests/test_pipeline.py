"""The pipeline end to end on tiny random models and tiny SAEs: collect -> select -> evaluate -> report."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from test_collection import ParityTask

from corrsteer.config import RunConfig
from corrsteer.method.evaluation import generate_records
from corrsteer.method.features import Selection
from corrsteer.pipeline import Resources, run, stage_collect, stage_eval, stage_select
from corrsteer.report.records import read_generations_jsonl
from corrsteer.sae.sets import load_saes
from corrsteer.tasks import get_task

RESULT_KEYS = {"task", "model", "sae", "mode", "seed", "baseline", "steered", "delta", "ci95", "mcnemar_p", "ser",
               "features", "per_category", "metrics", "selection", "timings", "config"}


@pytest.fixture
def saes(make_tiny_sae: Any) -> dict[int, Any]:
    return {l: make_tiny_sae(32, 48, "relu", seed=20 + l, layer=l) for l in (0, 1, 2)}


def small_cfg(tmp_path: Any, **kw: Any) -> RunConfig:
    base = dict(task="parity", model="tiny", sae="tiny", n_train=24, n_val=8, n_test=12, batch_size=6,
                checkpoint_every=12, progress=False, n_boot=200, out=str(tmp_path))
    base.update(kw)
    return RunConfig(**base)


def test_run_pruned_end_to_end(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any, saes: dict[int, Any]) -> None:
    task = ParityTask()
    results = run(small_cfg(tmp_path, mode="pruned"), model=tiny_llama, tokenizer=tiny_tokenizer, task=task,
                  saes=saes)
    assert RESULT_KEYS <= set(results)
    assert results["baseline"]["n"] == results["steered"]["n"] == 12
    doc = json.loads((tmp_path / "results.json").read_text())
    assert RESULT_KEYS <= set(doc) and doc["mode"] == "pruned"
    for f in doc["features"]:
        assert {"layer", "index", "r", "coefficient"} <= set(f)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "figures").is_dir()
    sel = Selection.load(tmp_path / "selection")
    assert sel.baseline_score is not None and len(sel.candidates) >= 1
    assert all(c.score is not None for c in sel.candidates)
    # the pruned rule, recomputed from the saved scores: per layer the better candidate (ties: positive),
    # kept iff strictly above the unsteered validation score; the kept ones are exactly what is steered
    expected = set()
    for layer in {c.layer for c in sel.candidates}:
        best = max((c for c in sel.candidates if c.layer == layer), key=lambda c: (c.score, c.sign > 0))
        if best.score > sel.baseline_score:
            expected.add((best.layer, best.sign))
    assert {(c.layer, c.sign) for c in sel.candidates if c.kept} == expected
    assert sel.layers == sorted(layer for layer, _ in expected)
    recs = read_generations_jsonl(tmp_path / "generations.jsonl")
    assert len(recs) == 24 and {r["condition"] for r in recs} == {"baseline", "steered"}
    base = [r["reward"] for r in recs if r["condition"] == "baseline"]
    assert results["baseline"]["score"] == pytest.approx(np.mean(base))
    # the unsteered test score equals a plain generation pass over the same samples
    plain = generate_records(tiny_llama, tiny_tokenizer, task, task.samples("test", 12, seed=0), batch_size=6,
                             progress=False)
    assert [r["completion"] for r in plain] == [r["completion"] for r in recs if r["condition"] == "baseline"]
    assert set(results["correlations"]) == {"0", "1", "2"}


def test_steered_condition_really_steers(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                         saes: dict[int, Any]) -> None:
    task = ParityTask()
    results = run(small_cfg(tmp_path, mode="all", scale=40.0), model=tiny_llama, tokenizer=tiny_tokenizer,
                  task=task, saes=saes)
    assert results["features"], "the tiny collection should give positive features"
    sel = Selection.load(tmp_path / "selection")
    assert sel.scale == 40.0 and sel.features
    assert all(f.sign == 1 and f.coefficient == f.mean_pos for f in sel.features)  # the scale is applied once, later
    recs = read_generations_jsonl(tmp_path / "generations.jsonl")
    base = [r["completion"] for r in recs if r["condition"] == "baseline"]
    steered = [r["completion"] for r in recs if r["condition"] == "steered"]
    assert base != steered
    # the saved selection, loaded without its SAEs, reproduces the steered condition
    again = generate_records(tiny_llama, tiny_tokenizer, task, task.samples("test", 12, seed=0),
                             sel.interventions(), batch_size=6, progress=False)
    assert [r["completion"] for r in again] == steered
    pos, neg = results["pos"], results["neg"]
    b = [r["reward"] for r in recs if r["condition"] == "baseline"]
    s = [r["reward"] for r in recs if r["condition"] == "steered"]
    assert pos == sum(1 for x, y in zip(b, s) if (x, y) == (0, 1))
    assert neg == sum(1 for x, y in zip(b, s) if (x, y) == (1, 0))


def test_run_on_the_synthetic_task(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                   saes: dict[int, Any]) -> None:
    task = get_task("arithmetic", n_train=30, n_validation=8, n_test=10)
    results = run(small_cfg(tmp_path, task="arithmetic", mode="all", n_train=12, n_test=10), model=tiny_llama,
                  tokenizer=tiny_tokenizer, task=task, saes=saes)
    assert RESULT_KEYS <= set(results) and results["task"] == "arithmetic"
    assert set(results["per_category"]) <= set(task.categories())
    assert (tmp_path / "report.md").read_text().startswith("# corrsteer report")
    if not results["features"]:  # a random model scores 0 everywhere: nothing to steer, said so
        assert results["selection"]["note"] and results["delta"] == 0.0


def test_stages_separately_equal_run(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                     saes: dict[int, Any]) -> None:
    task = ParityTask()
    whole = run(small_cfg(tmp_path / "a", mode="global"), model=tiny_llama, tokenizer=tiny_tokenizer, task=task,
                saes=saes)
    cfg = small_cfg(tmp_path / "b", mode="global")
    res = Resources(tiny_llama, tiny_tokenizer, task, saes)
    stage_collect(cfg, res)
    stage_select(cfg, res)                        # reads the collection from disk
    parts = stage_eval(cfg, Resources(tiny_llama, tiny_tokenizer, task, {}))  # reads the selection from disk
    for key in ("baseline", "steered", "delta", "ci95", "mcnemar_p", "features", "selection"):
        assert parts[key] == whole[key], key
    assert len(whole["features"]) <= 1           # global steers one candidate


def test_select_stage_refuses_other_layers(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                           saes: dict[int, Any]) -> None:
    task = ParityTask()
    cfg = small_cfg(tmp_path, n_train=6)
    stage_collect(cfg, Resources(tiny_llama, tiny_tokenizer, task, saes))
    with pytest.raises(ValueError, match="pass the same --sae/--layers as for collect"):
        stage_select(cfg, Resources(tiny_llama, tiny_tokenizer, task, {0: saes[0]}))
    with pytest.raises(ValueError, match="lacks selection.json"):
        stage_eval(small_cfg(tmp_path / "empty"), Resources(tiny_llama, tiny_tokenizer, task, {}))


def test_load_saes_from_paths(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any, saes: dict[int, Any],
                              make_tiny_sae: Any) -> None:

    paths = [str((saes[l]).save(tmp_path / f"sae{l}")) for l in (0, 2)]
    got = load_saes(",".join(paths), tiny_llama, tiny_tokenizer)
    assert sorted(got) == [0, 2]
    np.testing.assert_array_equal(got[2].W_dec, saes[2].W_dec)
    assert sorted(load_saes(",".join(paths), tiny_llama, tiny_tokenizer, layers=(2,))) == [2]
    with pytest.raises(ValueError, match=r"no SAE for layers \[1\]"):
        load_saes(",".join(paths), tiny_llama, tiny_tokenizer, layers=(1, 2))
    with pytest.raises(ValueError, match="out of range: the model has 3 layers"):
        load_saes(paths[0], tiny_llama, tiny_tokenizer, layers=(5,))
    with pytest.raises(ValueError, match="two SAEs for layer 0"):
        load_saes(f"{paths[0]},{paths[0]}", tiny_llama, tiny_tokenizer)
    anonymous = make_tiny_sae(32, 16, seed=3, layer=None)
    p = str((anonymous).save(tmp_path / "anon"))
    with pytest.raises(ValueError, match="does not say which layer"):
        load_saes(p, tiny_llama, tiny_tokenizer)
    assert sorted(load_saes(p, tiny_llama, tiny_tokenizer, layers=(1,))) == [1]
    wide = make_tiny_sae(16, 8, seed=4, layer=1)
    with pytest.raises(ValueError, match="d_in=16"):
        load_saes(str((wide).save(tmp_path / "wide")), tiny_llama, tiny_tokenizer)


@pytest.mark.parametrize("method", ["diff-in-means", "random"])
def test_run_with_a_control_method_steers_and_round_trips(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                                          saes: dict[int, Any], method: str) -> None:
    task = ParityTask()
    results = run(small_cfg(tmp_path, mode="all", method=method, scale=20.0), model=tiny_llama,
                  tokenizer=tiny_tokenizer, task=task, saes=saes)
    assert results["method"] == method and results["steered_layers"]
    sel = Selection.load(tmp_path / "selection")
    assert sel.method == method and sel.layers == results["steered_layers"]
    assert (sel.features == []) == (method == "diff-in-means")
    recs = read_generations_jsonl(tmp_path / "generations.jsonl")
    base = [r["completion"] for r in recs if r["condition"] == "baseline"]
    assert base != [r["completion"] for r in recs if r["condition"] == "steered"]
    if method == "diff-in-means":
        from corrsteer.method.collection import load_collection

        assert load_collection(tmp_path).controls is not None  # collected in the same pass
    assert RunConfig(task="t", method=method).out_dir() == f"runs/t-all-{method}-seed0"
    assert RunConfig(task="t").out_dir() == "runs/t-all-seed0"
