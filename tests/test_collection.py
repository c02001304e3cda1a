"""Collection on a tiny random model: wiring against a manual pass, checkpoints, kill-and-resume equality."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from corrsteer.errors import CorrsteerError
from corrsteer.method.collection import CHECKPOINT_FILE, COLLECTION_DIR, collect, load_checkpoint, load_collection
from corrsteer.tasks.base import Sample, Task

LAYERS = (0, 2)


class ParityTask(Task):
    """Reward = parity of the completion's character codes: varies on a random model."""

    name = "parity"
    max_new_tokens = 4
    stop_strings = ("\n",)
    default_pool = "max"

    def load_splits(self) -> dict[str, list[Sample]]:
        def make(split: str, n: int) -> list[Sample]:
            return [Sample(id=f"{split}:{i}", question=f"{split[0]}{i * 37 % 101} {chr(65 + i % 26)}?",
                           target=0, category="ab"[i % 2]) for i in range(n)]
        return {"train": make("train", 40), "validation": make("validation", 12), "test": make("test", 16)}

    def user_text(self, sample: Sample) -> str:
        return sample.question

    def extract(self, sample: Sample, completion: str) -> int:
        return sum(map(ord, completion)) % 2


@pytest.fixture
def parity_task() -> ParityTask:
    return ParityTask()


@pytest.fixture
def saes(make_tiny_sae: Any) -> dict[int, Any]:
    return {l: make_tiny_sae(32, 48, "relu", seed=10 + l, layer=l) for l in LAYERS}


def acc_bytes(col: Any) -> dict[int, bytes]:
    return {l: a.to_bytes() for l, a in col.accumulators.items()}


def test_collect_equals_a_manual_capture_pass(tiny_llama: Any, tiny_tokenizer: Any, parity_task: ParityTask,
                                              saes: dict[int, Any]) -> None:
    import corrsteer
    from corrsteer.hooks import capture
    from corrsteer.method.generation import generate

    samples = parity_task.samples("train", 12)
    col = collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, batch_size=12, progress=False)
    prompts = [parity_task.prompt(s, tiny_tokenizer) for s in samples]
    with capture(tiny_llama, saes, pool="max") as cap:
        gens = generate(tiny_llama, tiny_tokenizer, prompts, 4, stop_strings=("\n",), batch_size=12, capture=cap)
    z = cap.result()
    y = np.array([parity_task.reward(s, g.completion) for s, g in zip(samples, gens)])
    assert 0 < y.sum() < len(y), f"rewards are constant ({y}); the test needs both classes"
    assert [r["reward"] for r in col.records] == y.tolist()
    assert [r["completion"] for r in col.records] == [g.completion for g in gens]
    assert [r["id"] for r in col.records] == [s.id for s in samples]
    for l in LAYERS:
        manual = corrsteer.core.CorrelationAccumulator(48)
        manual.update(z[l], y)
        assert col.accumulators[l].to_bytes() == manual.to_bytes(), f"layer {l}"
    assert col.n == 12 and col.score == pytest.approx(y.mean()) and col.complete


def test_positions_all_pools_a_superset_and_mean_differs(tiny_llama: Any, tiny_tokenizer: Any,
                                                         parity_task: ParityTask, saes: dict[int, Any]) -> None:
    samples = parity_task.samples("train", 8)
    gen = collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, progress=False)
    full = collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, positions="all", progress=False)
    mean = collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, pool="mean", progress=False)
    for l in LAYERS:
        # same rewards; max over more positions can only grow, so the mean over positives can only grow
        a, b = gen.accumulators[l].coefficient(), full.accumulators[l].coefficient()
        assert np.all(b >= a - 1e-6) and np.any(b > a + 1e-6)
        assert not np.allclose(mean.accumulators[l].coefficient(), a)
    assert [r["reward"] for r in gen.records] == [r["reward"] for r in full.records]
    assert gen.meta["positions"] == "generation" and full.meta["positions"] == "all"
    assert mean.meta["pool"] == "mean" and gen.meta["pool"] == "max"  # task default


def test_kill_and_resume_gives_identical_accumulators(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                                      parity_task: ParityTask, saes: dict[int, Any]) -> None:
    samples = parity_task.samples("train", 22)
    kw = dict(batch_size=3, checkpoint_every=8, progress=False)
    seen: list[int] = []
    ref = collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, out_dir=tmp_path / "a",
                  on_checkpoint=seen.append, **kw)
    assert seen == [8, 16, 22]

    from conftest import Killed, kill_at

    with pytest.raises(Killed):
        collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, out_dir=tmp_path / "b",
                on_checkpoint=kill_at(16), **kw)
    partial, offset = load_checkpoint(tmp_path / "b" / COLLECTION_DIR / CHECKPOINT_FILE)
    assert offset == 16 and not partial.complete and partial.n == 16
    with pytest.raises(ValueError, match="finish it with `corrsteer collect --resume`"):
        load_collection(tmp_path / "b")
    with pytest.raises(ValueError, match="pool: checkpoint 'max', now 'mean'"):
        collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, out_dir=tmp_path / "b", resume=True,
                pool="mean", **kw)
    with pytest.raises(ValueError, match="batch_size"):
        collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, out_dir=tmp_path / "b", resume=True,
                batch_size=4, checkpoint_every=8, progress=False)
    resumed_at: list[int] = []
    res = collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, out_dir=tmp_path / "b", resume=True,
                  on_checkpoint=resumed_at.append, **kw)
    assert resumed_at == [22]                      # only the rest was generated
    assert acc_bytes(res) == acc_bytes(ref)
    assert res.records == ref.records
    loaded = load_collection(tmp_path / "b")
    assert acc_bytes(loaded) == acc_bytes(ref) and loaded.complete
    again: list[int] = []
    done = collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, out_dir=tmp_path / "b", resume=True,
                   on_checkpoint=again.append, **kw)
    assert again == [] and acc_bytes(done) == acc_bytes(ref)
    assert (tmp_path / "b" / COLLECTION_DIR / "records.jsonl").read_text().count("\n") == 22


def test_resume_refuses_other_samples_or_saes(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                              parity_task: ParityTask, saes: dict[int, Any],
                                              make_tiny_sae: Any) -> None:
    samples = parity_task.samples("train", 6)
    collect(tiny_llama, tiny_tokenizer, parity_task, saes, samples, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="sample_ids"):
        collect(tiny_llama, tiny_tokenizer, parity_task, saes, parity_task.samples("train", 6, seed=1),
                out_dir=tmp_path, resume=True, progress=False)
    other = dict(saes)
    other[2] = make_tiny_sae(32, 48, "relu", seed=99, layer=2)
    with pytest.raises(ValueError, match="saes"):
        collect(tiny_llama, tiny_tokenizer, parity_task, other, samples, out_dir=tmp_path, resume=True,
                progress=False)


def test_corrupt_checkpoint_is_a_library_error(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                               parity_task: ParityTask, saes: dict[int, Any]) -> None:
    collect(tiny_llama, tiny_tokenizer, parity_task, saes, parity_task.samples("train", 3), out_dir=tmp_path,
            progress=False)
    path = tmp_path / COLLECTION_DIR / CHECKPOINT_FILE
    good = path.read_bytes()
    for bad in (b"not a zip", good[: len(good) // 2], good[:-7]):
        path.write_bytes(bad)
        with pytest.raises(CorrsteerError, match="unreadable or corrupt"):
            load_collection(tmp_path)
        with pytest.raises(CorrsteerError, match="delete it and collect again"):
            collect(tiny_llama, tiny_tokenizer, parity_task, saes, parity_task.samples("train", 3),
                    out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="run `corrsteer collect` first"):
        load_collection(tmp_path / "nowhere")


@pytest.mark.parametrize("kwargs, match", [
    (dict(pool="sum"), "pool='sum' is not valid; choose one of max, mean"),
    (dict(positions="prompt"), "positions='prompt' is not valid; choose one of generation, all"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(checkpoint_every=-1), "checkpoint_every=-1"),
])
def test_collect_rejects_bad_options(tiny_llama: Any, tiny_tokenizer: Any, parity_task: ParityTask,
                                     saes: dict[int, Any], kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        collect(tiny_llama, tiny_tokenizer, parity_task, saes, parity_task.samples("train", 2), progress=False,
                **kwargs)


def test_collect_rejects_empty_inputs(tiny_llama: Any, tiny_tokenizer: Any, parity_task: ParityTask,
                                      saes: dict[int, Any]) -> None:
    with pytest.raises(ValueError, match="samples is empty"):
        collect(tiny_llama, tiny_tokenizer, parity_task, saes, [], progress=False)
    with pytest.raises(ValueError, match="saes is empty"):
        collect(tiny_llama, tiny_tokenizer, parity_task, {}, parity_task.samples("train", 2), progress=False)


def test_progress_bar_shows_the_running_score(tiny_llama: Any, tiny_tokenizer: Any, parity_task: ParityTask,
                                              saes: dict[int, Any], capsys: pytest.CaptureFixture[str]) -> None:
    collect(tiny_llama, tiny_tokenizer, parity_task, saes, parity_task.samples("train", 4), batch_size=2)
    err = capsys.readouterr().err
    assert "collect parity" in err and "score=" in err
