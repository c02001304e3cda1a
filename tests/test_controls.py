"""The controls' collection state (corrsteer.studies.controls) on a tiny model, and the controls table end to end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from test_collection import ParityTask

import corrsteer
from corrsteer.config import RunConfig
from corrsteer.errors import CorrsteerError
from corrsteer.method.collection import collect, load_checkpoint
from corrsteer.method.control_state import ControlState, identity_sae, residual_means
from corrsteer.studies.controls import run_controls

LAYERS = (0, 2)


@pytest.fixture
def saes(make_tiny_sae: Any) -> dict[int, Any]:
    return {l: make_tiny_sae(32, 48, "relu", seed=10 + l, layer=l) for l in LAYERS}


def test_identity_sae_pools_the_mean_residual_exactly() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)  # (n_seq, n_tok, d_model)
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    sae = identity_sae(8, layer=1)
    pooled = sae.encode_pooled(x, mask, mode="mean")  # (n_seq, 2 d_model)
    expected = np.stack([x[0].mean(0), x[1, :3].mean(0)])
    np.testing.assert_allclose(residual_means(pooled), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(sae.decode(sae.encode(x[0])), x[0])


def decoder_outputs(model: Any, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """{layer: (1, n_tok, d_model)} outputs of the decoder layers (hidden_states[-1] is after the final norm)."""
    from corrsteer.models import find_layers

    out, handles = {}, []
    for l in LAYERS:
        def hook(_m: Any, _i: Any, o: Any, l: int = l) -> None:
            out[l] = (o[0] if isinstance(o, tuple) else o).detach()
        handles.append(find_layers(model)[l].register_forward_hook(hook))
    try:
        model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return out


def manual_residual_means(model: Any, tok: Any, task: Any, samples: list[Any], records: list[dict],
                          n_new: list[int]) -> dict[int, np.ndarray]:
    """Each sequence alone, no cache: decoder layer l's output at positions n-1 .. n+T-2, averaged."""
    out = {l: [] for l in LAYERS}
    for s, rec, t in zip(samples, records, n_new):
        prompt = torch.tensor([tok(task.prompt(s, tok))["input_ids"]])
        n = prompt.shape[1]
        with torch.no_grad():  # the real generated ids (a completion's text drops special tokens)
            seq = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=t,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
            hs = decoder_outputs(model, seq[:, :n + t - 1])
        for l in LAYERS:
            out[l].append(hs[l][0, n - 1:n + t - 1].mean(0).numpy())
    return {l: np.stack(v) for l, v in out.items()}


def test_controls_collection_matches_manual_passes(tiny_llama: Any, tiny_tokenizer: Any, saes: dict[int, Any]) -> None:
    from corrsteer.hooks import capture
    from corrsteer.method.generation import generate

    task = ParityTask()
    samples = task.samples("train", 14)
    plain = collect(tiny_llama, tiny_tokenizer, task, saes, samples, batch_size=5, checkpoint_every=7, progress=False)
    col = collect(tiny_llama, tiny_tokenizer, task, saes, samples, batch_size=5, checkpoint_every=7, progress=False,
                  controls=True, control_seed=3)
    for l in LAYERS:  # the extra capture changes nothing in CorrSteer's own state
        assert col.accumulators[l].to_bytes() == plain.accumulators[l].to_bytes(), f"layer {l}"
    assert [r["completion"] for r in col.records] == [r["completion"] for r in plain.records]
    y = np.array([r["reward"] for r in col.records], dtype=np.float64)
    assert 0 < y.sum() < len(y), f"rewards are constant ({y}); the test needs both classes"
    prompts = [task.prompt(s, tiny_tokenizer) for s in samples]
    with capture(tiny_llama, saes, pool="max") as cap:
        gens = generate(tiny_llama, tiny_tokenizer, prompts, 4, stop_strings=("\n",), batch_size=14, capture=cap)
    z = cap.result()
    st = col.controls
    # per-class accumulators: exact class moments of the pooled activations
    for l in LAYERS:
        for acc, part in ((st.pos[l], z[l][y == 1]), (st.neg[l], z[l][y == 0])):
            m = acc.moments()
            p64 = part.astype(np.float64)
            assert m["n"] == len(part)
            np.testing.assert_allclose(m["mean"], p64.mean(0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(m["m2"], ((p64 - p64.mean(0)) ** 2).sum(0), rtol=1e-4, atol=1e-5)
    # diff-in-means: class means of the residual at the generation positions, sequence by sequence
    from corrsteer.method.baselines import diff_in_means

    x = manual_residual_means(tiny_llama, tiny_tokenizer, task, samples, col.records, [g.n_new_tokens for g in gens])
    for l in LAYERS:
        expected = x[l][y == 1].mean(0) - x[l][y == 0].mean(0)
        np.testing.assert_allclose(diff_in_means(st.resid[l]), expected, rtol=1e-4, atol=1e-5, err_msg=f"layer {l}")
    # shuffled: within each checkpoint window (7 samples) the rewards are permuted with rng([seed, start])
    for l in LAYERS:
        manual = corrsteer.core.CorrelationAccumulator(48)
        for start in (0, 7):
            perm = np.random.default_rng([3, start]).permutation(7)
            manual.update(z[l][start:start + 7], y[start:start + 7][perm])
        first = st.shuffled[0][l]
        assert first.n == manual.n == 14 and first.n_positive == manual.n_positive
        np.testing.assert_allclose(first.correlation(), manual.correlation(), atol=1e-5)
        np.testing.assert_allclose(first.coefficient(), manual.coefficient(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(first.correlation(), col.accumulators[l].correlation())
    assert st.offset == 14 and st.pending == 0


def test_shuffled_is_seeded_and_survives_kill_and_resume(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                                         saes: dict[int, Any]) -> None:
    task = ParityTask()
    samples = task.samples("train", 12)
    kw = dict(batch_size=4, checkpoint_every=4, progress=False, controls=True)
    full = collect(tiny_llama, tiny_tokenizer, task, saes, samples, control_seed=1, out_dir=tmp_path / "a", **kw)
    again = collect(tiny_llama, tiny_tokenizer, task, saes, samples, control_seed=1, **kw)
    other = collect(tiny_llama, tiny_tokenizer, task, saes, samples, control_seed=2, **kw)
    assert full.controls.to_bytes() == again.controls.to_bytes()
    assert any(full.controls.shuffled[0][l].to_bytes() != other.controls.shuffled[0][l].to_bytes() for l in LAYERS)

    from conftest import Killed, kill_at

    with pytest.raises(Killed):
        collect(tiny_llama, tiny_tokenizer, task, saes, samples, control_seed=1, out_dir=tmp_path / "b",
                on_checkpoint=kill_at(8), **kw)
    resumed = collect(tiny_llama, tiny_tokenizer, task, saes, samples, control_seed=1, out_dir=tmp_path / "b",
                      resume=True, **kw)
    assert resumed.controls.to_bytes() == full.controls.to_bytes()
    loaded, _ = load_checkpoint(tmp_path / "a" / "collection" / "checkpoint.npz")
    assert loaded.controls.to_bytes() == full.controls.to_bytes()
    with pytest.raises(ValueError, match="cannot resume"):  # controls on/off is part of the fingerprint
        collect(tiny_llama, tiny_tokenizer, task, saes, samples, out_dir=tmp_path / "b", resume=True,
                batch_size=4, checkpoint_every=4, progress=False)


def test_shuffled_draws_are_independent_permutations_and_draw_zero_is_unchanged() -> None:
    rng = np.random.default_rng(0)
    z = {0: rng.random((10, 4)).astype(np.float32)}
    y = (np.arange(10) % 3 == 0).astype(np.float64)
    one, three = ControlState({0: 4}, d_model=3, seed=5), ControlState({0: 4}, d_model=3, seed=5, draws=3)
    for st in (one, three):
        st.update(z, {0: np.zeros((10, 3), np.float32)}, y)
        st.flush()
    assert three.draws == 3 and one.draws == 1
    assert three.shuffled[0][0].to_bytes() == one.shuffled[0][0].to_bytes()  # draw 0 permutes as before draws
    for d in (1, 2):
        manual = corrsteer.core.CorrelationAccumulator(4)
        manual.update(z[0], y[np.random.default_rng([5, 0, d]).permutation(10)])
        np.testing.assert_allclose(three.shuffled[d][0].correlation(), manual.correlation(), atol=1e-6)
    assert len({three.shuffled[d][0].to_bytes() for d in range(3)}) == 3
    back = ControlState.from_arrays(three.to_arrays())
    assert back.draws == 3 and back.to_bytes() == three.to_bytes()
    with pytest.raises(ValueError, match="draws"):
        ControlState({0: 4}, d_model=3, draws=0)


def test_control_state_rejects_a_bad_residual_and_unflushed_serialisation() -> None:
    st = ControlState({0: 4}, d_model=3)
    z = {0: np.ones((2, 4), np.float32)}
    with pytest.raises(CorrsteerError, match="residual means"):
        st.update(z, {0: np.ones((2, 5), np.float32)}, np.array([0.0, 1.0]))
    st.update(z, {0: np.ones((2, 3), np.float32)}, np.array([0.0, 1.0]))
    with pytest.raises(CorrsteerError, match="flush"):
        st.to_arrays()
    st.flush()
    assert ControlState.from_arrays(st.to_arrays()).to_bytes() == st.to_bytes()
    assert ControlState.from_arrays({}) is None


def test_controls_table_end_to_end(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                                 saes: dict[int, Any]) -> None:
    from corrsteer.studies.controls import DEFAULT_METHODS

    cfg = RunConfig(task="parity", model="tiny", sae="tiny", n_train=24, n_test=10, batch_size=8,
                    checkpoint_every=12, progress=False, n_boot=200, out=str(tmp_path), mode="all", scale=8.0)
    doc = run_controls(cfg, DEFAULT_METHODS, draws=2, model=tiny_llama, tokenizer=tiny_tokenizer, task=ParityTask(),
                       saes=saes)
    assert 0 < doc["collection_score"] < 1 and cfg.controls is False  # the caller's config is not modified
    names = ["corrsteer", "random #0", "random #1", "shuffled #0", "shuffled #1", *DEFAULT_METHODS[2:]]
    assert list(doc["rows"]) == names
    saved = json.loads((tmp_path / "controls.json").read_text())
    base = [r["baseline"]["score"] for r in saved["rows"].values()]
    assert len(set(base)) == 1  # one shared unsteered baseline
    for name in names:
        row = saved["rows"][name]
        assert {"delta", "ci95", "mcnemar_p", "steers", "features"} <= set(row) and row["steered"]["n"] == 10
        assert (tmp_path / "methods" / name.replace(" #", "-") / "selection" / "selection.json").is_file()
        assert 0 <= row["fluency"]["degenerate"] <= 1
    md = (tmp_path / "controls.md").read_text()
    assert "| **CorrSteer** |" in md
    for name in names[1:]:
        assert f" {name} |" in md
    for m in ("random", "shuffled"):  # each drawn control: its draws, their mean, and CorrSteer against it
        s = saved["summaries"][m]
        assert s["n_draws"] == 2 and s["delta"] == pytest.approx(np.mean([saved["rows"][f"{m} #{d}"]["delta"]
                                                                         for d in range(2)]))
        assert f"**{m}**, mean of 2 draws" in md and saved["versus"][m]["n"] == 10
    assert saved["examples"] and "unsteered (reward" in md
    assert (tmp_path / "figures" / "deltas.png").is_file()
    rows = saved["rows"]
    assert [f["layer"] for f in rows["random #0"]["features"]] == [f["layer"] for f in rows["corrsteer"]["features"]]
    assert [f["index"] for f in rows["random #0"]["features"]] != [f["index"] for f in rows["random #1"]["features"]]
    assert rows["diff-in-means"]["steered_layers"] == rows["corrsteer"]["steered_layers"]
    assert all(f["sign"] == "-" for f in rows["negative"]["features"]) and rows["negative"]["features"]
    assert rows["mi"]["features"] and rows["fisher"]["features"] and rows["shuffled #0"]["features"]
    steered = {name: [json.loads(line)["completion"] for line in (tmp_path / "methods" / name.replace(" #", "-") /
                                                                   "generations.jsonl").read_text().splitlines()][10:]
               for name in names}
    assert steered["corrsteer"] != steered["random #0"]  # different features really steer differently
