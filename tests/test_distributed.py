"""Distributed collection, validation and evaluation, with ranks as threads of this process.

The exchanges are the real ones of :class:`corrsteer.method.distributed.World` over a
thread hub (``dist_threads``); each rank has its own copy of the tiny model. What must
hold: N ranks give byte-identical accumulators, records, selections and results to one
process; a rank that dies leaves every finished window on disk and a resume (with the
same or another number of ranks) ends byte-identical; bad input fails on every rank
before anything is written. The real ``torch.distributed`` path is ``test_torchrun.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Killed, build_tiny_model, build_tiny_sae, build_tiny_tokenizer
from dist_threads import assert_same_run, run_ranks, unwrap
from test_collection import ParityTask

from corrsteer.config import RunConfig
from corrsteer.errors import CorrsteerError
from corrsteer.method import distributed
from corrsteer.method.checkpoints import CHECKPOINT_FILE, COLLECTION_DIR, load_checkpoint, window_files
from corrsteer.method.collection import collect
from corrsteer.method.distributed import World
from corrsteer.method.evaluation import generate_conditions, generate_records

TOK = build_tiny_tokenizer()
MODELS = [build_tiny_model("llama") for _ in range(3)]  # one per rank, built here: seeding is process-wide
LAYERS = (0, 2)
KW = dict(batch_size=3, checkpoint_every=8, progress=False)  # 22 samples: windows of 8, 8 and 6


def _saes(seed: int = 10) -> dict[int, Any]:
    return {l: build_tiny_sae(32, 48, "relu", seed=seed + l, layer=l) for l in LAYERS}


def _collect(world: World | None, out: Path | None, n: int = 22, saes: dict[int, Any] | None = None,
             **kw: Any) -> Any:
    task = ParityTask()
    return collect(MODELS[0 if world is None else world.rank], TOK, task, saes or _saes(), task.samples("train", n),
                   out_dir=out, world=world, **{**KW, **kw})


def _bytes(col: Any) -> dict[Any, bytes]:
    out: dict[Any, bytes] = {l: a.to_bytes() for l, a in col.accumulators.items()}
    if col.controls is not None:
        out["controls"] = col.controls.to_bytes()
    return out


@pytest.fixture(scope="module")
def reference() -> Any:
    """One process, no checkpoints: what every distributed run must reproduce."""
    return _collect(None, None)


@pytest.mark.parametrize("n_units, size", [(1, 1), (3, 2), (10, 3), (2, 5), (7, 7), (100, 8)])
def test_shares_are_contiguous_balanced_and_cover_every_unit(n_units: int, size: int) -> None:
    shares = [World(rank=r, size=size).share(n_units) for r in range(size)]
    assert [u for s in shares for u in s] == list(range(n_units))   # every unit once, in rank order
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("size", [2, 3])
def test_n_ranks_give_the_bytes_of_one_process(tmp_path: Path, reference: Any, size: int) -> None:
    cols = unwrap(run_ranks(size, lambda w: _collect(w, tmp_path)))
    for rank, col in enumerate(cols):
        assert _bytes(col) == _bytes(reference), f"rank {rank} of {size}"
        assert col.records == reference.records and col.complete
    folder = tmp_path / COLLECTION_DIR
    saved, offset = load_checkpoint(folder / CHECKPOINT_FILE)
    assert offset == 22 and saved.complete and _bytes(saved) == _bytes(reference)
    assert window_files(folder) == {}, "window files must go once checkpoint.npz holds the collection"
    lines = (folder / "records.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [r["id"] for r in reference.records]


def test_controls_state_is_the_same_on_two_ranks() -> None:
    one = _collect(None, None, controls=True, control_seed=3)
    two = unwrap(run_ranks(2, lambda w: _collect(w, None, controls=True, control_seed=3)))
    for col in two:
        assert _bytes(col) == _bytes(one)
        assert col.controls.offset == 22


def _kill_rank(rank: int, at: int) -> Any:
    def hook(world: World) -> Any:
        def on_checkpoint(offset: int) -> None:
            if world.rank == rank and offset == at:
                raise Killed
        return on_checkpoint
    return hook


def test_a_rank_dies_and_a_resume_on_any_number_of_ranks_is_byte_identical(tmp_path: Path, reference: Any) -> None:
    first = tmp_path / "killed"
    # 3 windows on 2 ranks: rank 0 collects window 0, rank 1 windows 1 and 2; rank 1 dies after window 1
    killed = run_ranks(2, lambda w: _collect(w, first, on_checkpoint=_kill_rank(1, 16)(w)))
    assert isinstance(killed[1], Killed)
    assert isinstance(killed[0], CorrsteerError) and "died" in str(killed[0])
    folder = first / COLLECTION_DIR
    assert sorted(window_files(folder)) == [0, 1] and not (folder / CHECKPOINT_FILE).exists()
    for size in (2, 3, 1):
        out = tmp_path / f"resume{size}"
        shutil.copytree(first, out)
        seen: dict[int, list[int]] = {}

        def resume(w: World | None, out: Path = out, seen: dict = seen) -> Any:
            rank = 0 if w is None else w.rank
            return _collect(w, out, resume=True, on_checkpoint=lambda o: seen.setdefault(rank, []).append(o))

        cols = [resume(None)] if size == 1 else unwrap(run_ranks(size, resume))
        for col in cols:
            assert _bytes(col) == _bytes(reference), f"resumed on {size} ranks"
            assert col.records == reference.records
        assert sorted(o for offsets in seen.values() for o in offsets) == ([8, 16, 22] if size == 1 else [22]), \
            f"resume on {size}: only window 2 is collected again ({seen})"
        assert _bytes(load_checkpoint(out / COLLECTION_DIR / CHECKPOINT_FILE)[0]) == _bytes(reference)


def test_a_one_process_checkpoint_resumes_on_two_ranks(tmp_path: Path, reference: Any) -> None:
    with pytest.raises(Killed):
        _collect(None, tmp_path, on_checkpoint=lambda o: (_ for _ in ()).throw(Killed) if o == 8 else None)
    cols = unwrap(run_ranks(2, lambda w: _collect(w, tmp_path, resume=True)))
    assert all(_bytes(c) == _bytes(reference) for c in cols)


def test_ranks_with_other_saes_fail_together_and_leave_the_checkpoint_alone(tmp_path: Path) -> None:
    _collect(None, tmp_path, n=6)
    ckpt = tmp_path / COLLECTION_DIR / CHECKPOINT_FILE
    before = ckpt.read_bytes()
    results = run_ranks(2, lambda w: _collect(w, tmp_path, n=6, saes=_saes(10 if w.rank == 0 else 99)))
    for r in results:
        assert isinstance(r, ValueError) and "ranks disagree on the collection's settings (saes:" in str(r)
    assert ckpt.read_bytes() == before and window_files(tmp_path / COLLECTION_DIR) == {}


def test_more_ranks_than_samples_is_refused() -> None:
    for r in run_ranks(3, lambda w: _collect(w, None, n=2)):
        assert isinstance(r, ValueError) and "3 ranks share 2 training samples" in str(r)


def test_a_resume_with_other_settings_fails_on_every_rank(tmp_path: Path) -> None:
    _collect(None, tmp_path, n=6)
    results = run_ranks(2, lambda w: _collect(w, tmp_path, n=6, resume=True, pool="mean"))
    assert "cannot resume" in str(results[0]) and "pool: checkpoint 'max', now 'mean'" in str(results[0])
    assert isinstance(results[1], ValueError) and str(results[1]).startswith("rank 0: cannot resume")


def test_sharded_generation_gathers_every_record_in_sample_order() -> None:
    import numpy as np

    task = ParityTask()
    samples = task.samples("test", 9)  # batches of 4, 4, 1: rank 0 gets one, rank 1 two
    sets = [None, {1: np.linspace(-3, 3, 32, dtype=np.float32)}]
    model = MODELS[0]
    one = generate_conditions(model, TOK, task, samples, sets, batch_size=4, progress=False)
    two = unwrap(run_ranks(2, lambda w: generate_conditions(MODELS[w.rank], TOK, task, samples, sets,
                                                             batch_size=4, progress=False, world=w)))
    assert two[0] == two[1] == one
    recs = unwrap(run_ranks(2, lambda w: generate_records(MODELS[w.rank], TOK, task, samples, sets[1],
                                                          batch_size=4, progress=False, condition="steered",
                                                          world=w)))
    assert recs[0] == generate_records(model, TOK, task, samples, sets[1], batch_size=4, progress=False,
                                       condition="steered")


def test_pipeline_on_two_ranks_writes_what_one_process_writes(tmp_path: Path) -> None:
    from corrsteer.pipeline import run

    saes = {l: build_tiny_sae(32, 48, "relu", seed=20 + l, layer=l) for l in (0, 1, 2)}

    def cfg(out: Path) -> RunConfig:
        return RunConfig(task="parity", model="tiny", sae="tiny", n_train=24, n_val=8, n_test=12, batch_size=4,
                         checkpoint_every=8, progress=False, n_boot=200, out=str(out), mode="pruned", scale=8.0)

    def go(world: World | None, out: Path) -> Any:
        with distributed.use(world or World()):
            return run(cfg(out), model=MODELS[0 if world is None else world.rank], tokenizer=TOK, task=ParityTask(),
                       saes=saes)

    go(None, tmp_path / "one")
    unwrap(run_ranks(2, lambda w: go(w, tmp_path / "two")))
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_controls_study_on_two_ranks_writes_what_one_process_writes(tmp_path: Path) -> None:
    """``corrsteer controls`` under torchrun: shared collection, validation and evaluation; rank 0 writes."""
    from corrsteer.studies.controls import run_controls

    saes = {l: build_tiny_sae(32, 48, "relu", seed=20 + l, layer=l) for l in (0, 1, 2)}
    methods = ["random", "shuffled", "diff-in-means", "fisher"]

    def go(world: World | None, out: Path) -> Any:
        cfg = RunConfig(task="parity", model="tiny", sae="tiny", n_train=24, n_val=6, n_test=10, batch_size=4,
                        checkpoint_every=8, progress=False, n_boot=200, out=str(out), mode="pruned", scale=8.0)
        with distributed.use(world or World()):
            return run_controls(cfg, methods, model=MODELS[0 if world is None else world.rank], tokenizer=TOK,
                                task=ParityTask(), saes=saes)

    go(None, tmp_path / "one")
    unwrap(run_ranks(2, lambda w: go(w, tmp_path / "two")))
    a, b = (json.loads((tmp_path / d / "controls.json").read_text()) for d in ("one", "two"))
    for doc in (a, b):
        doc.pop("timings"), doc["config"].pop("out"), doc.pop("command")  # the command names its --out
    assert a == b and {r.split(" #")[0] for r in a["rows"]} == {"corrsteer", *methods}
    md = (tmp_path / "two" / "controls.md").read_text()
    assert md.count("# CorrSteer vs controls:") == 1  # written once, by rank 0
