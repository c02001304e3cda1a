"""The real thing: ranks as processes joined by torch.distributed (gloo on the CPU, localhost).

Few and quick (tiny models): torchrun with 2 processes runs the pipeline and must write
what one process writes; a rank killed with SIGKILL mid-collection, then ``--resume``,
must end with the accumulators of an uninterrupted run; ranks launched by hand must
report a rank that died or hangs by its number, and a launch without MASTER_ADDR must
say what is missing. ``dist_worker.py`` is the rank's program.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import build_tiny_model, build_tiny_tokenizer
from dist_threads import assert_same_run

HERE = Path(__file__).resolve().parent
WORKER = HERE / "dist_worker.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent), **extra)
    return env


def run_group(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a session of its own, whose every process is killed past ``timeout``.

    torchrun's workers are its children: killing torchrun alone would leave them running.
    """
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # the timeout, or pytest-timeout / Ctrl-C interrupting the wait
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    # the ranks give up on each other after 300 s, so that none can outlive the test by much
    return run_group([*TORCHRUN, "--standalone", "--nproc-per-node", "2", str(WORKER), *args],
                     _env(CORRSTEER_DIST_TIMEOUT="300"), timeout)


def _report(out: Path, rank: int) -> dict[str, Any]:
    return json.loads((out / f"rank{rank}.json").read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_write_what_one_process_writes(tmp_path: Path) -> None:
    from dist_worker import RUN, SAES
    from test_collection import ParityTask

    from corrsteer.config import RunConfig
    from corrsteer.pipeline import run

    done = torchrun("run", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert _report(tmp_path / "two", 0)["status"] == _report(tmp_path / "two", 1)["status"] == "ok"
    run(RunConfig(out=str(tmp_path / "one"), **RUN), model=build_tiny_model("llama"), tokenizer=build_tiny_tokenizer(),
        task=ParityTask(), saes=SAES)
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_kill_9_of_one_rank_then_resume_is_byte_identical(tmp_path: Path) -> None:
    from dist_worker import COLLECT, N_COLLECT, SAES
    from test_collection import ParityTask

    from corrsteer.method.checkpoints import CHECKPOINT_FILE, COLLECTION_DIR, load_checkpoint, window_files
    from corrsteer.method.collection import collect

    out = tmp_path / "run"
    # windows 0-7, 8-15, 16-21: rank 0 collects the first, rank 1 the others and is killed after its first
    killed = torchrun("collect", str(out), "--kill-rank", "1", "--kill-at", "16")
    assert killed.returncode != 0 and not (out / "rank0.json").exists() or \
        _report(out, 0)["status"] == "error", killed.stderr[-2000:]
    assert 1 in window_files(out / COLLECTION_DIR), "the window rank 1 finished before it was killed is on disk"
    assert not (out / COLLECTION_DIR / CHECKPOINT_FILE).exists()
    resumed = torchrun("collect", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    task = ParityTask()
    ref = collect(build_tiny_model("llama"), build_tiny_tokenizer(), task, {l: SAES[l] for l in (0, 2)},
                  task.samples("train", N_COLLECT), **COLLECT)
    got, offset = load_checkpoint(out / COLLECTION_DIR / CHECKPOINT_FILE)
    assert offset == N_COLLECT and got.complete and got.records == ref.records
    for layer, acc in ref.accumulators.items():
        assert got.accumulators[layer].to_bytes() == acc.to_bytes(), f"layer {layer}"
    assert window_files(out / COLLECTION_DIR) == {}


def _by_hand(out: Path, scenario: str, timeout_s: int) -> list[subprocess.Popen]:
    port = str(_free_port())
    return [subprocess.Popen([sys.executable, str(WORKER), scenario, str(out)],
                             env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                      MASTER_PORT=port, CORRSTEER_DIST_TIMEOUT=str(timeout_s)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in range(2)]


@pytest.mark.parametrize("scenario", ["exit", "hang"])
def test_a_rank_that_dies_or_hangs_is_named_not_waited_for(tmp_path: Path, scenario: str) -> None:
    procs = _by_hand(tmp_path, scenario, timeout_s=8)
    start = time.perf_counter()
    try:
        procs[0].wait(timeout=120)
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    report = _report(tmp_path, 0)
    assert report["status"] == "error" and report["type"] == "CorrsteerError", report
    assert "rank 1 did not reach the collection's settings" in report["error"], report["error"]
    assert "--resume" in report["error"]
    limit = 8 + 30  # the timeout, plus start-up on a loaded machine
    assert report["waited_s"] < limit and time.perf_counter() - start < 120
    if scenario == "hang":
        assert report["waited_s"] >= 7, "a hanging rank is waited for until the timeout, not less"


def test_a_launch_without_master_addr_says_how_to_launch(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "corrsteer", "collect", "--task", "arithmetic", "--out",
                           str(tmp_path)], env=_env(RANK="0", WORLD_SIZE="2"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "MASTER_ADDR is not set but RANK/WORLD_SIZE are" in done.stderr and "torchrun" in done.stderr
    assert not (tmp_path / "collection").exists()


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(3900)  # two runs of up to 1800 s each, past the suite's 900 s
def test_torchrun_on_the_embedded_model_writes_what_one_process_writes(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m corrsteer run`` on gemma-3-270m and its default SAEs."""
    from corrsteer.errors import CorrsteerError
    from corrsteer.method.checkpoints import CHECKPOINT_FILE, COLLECTION_DIR, load_checkpoint
    from corrsteer.models.embedded import EMBEDDED, locate_parts

    try:
        locate_parts(EMBEDDED["gemma-3-270m"])
    except CorrsteerError as exc:
        pytest.skip(f"embedded model not installed: {exc}")
    args = ["run", "--task", "arithmetic", "--model", "gemma-3-270m", "--sae", "default", "--n-train", "48",
            "--n-val", "8", "--n-test", "16", "--batch-size", "8", "--checkpoint-every", "16", "--mode", "pruned",
            "--no-progress", "--n-boot", "500"]
    two = run_group([*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "corrsteer", *args, "--out",
                     str(tmp_path / "two")], _env(), 1800)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "corrsteer", *args, "--out", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=1800)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.stdout.count("baseline") == one.stdout.count("baseline") == 1  # rank 0 alone prints
    assert_same_run(tmp_path / "one", tmp_path / "two", validated=False)
    ca, cb = (load_checkpoint(tmp_path / d / COLLECTION_DIR / CHECKPOINT_FILE)[0] for d in ("one", "two"))
    assert {l: x.to_bytes() for l, x in ca.accumulators.items()} == {l: x.to_bytes() for l, x in cb.accumulators.items()}
