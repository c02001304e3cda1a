"""One rank of a real multi-process test (``test_torchrun.py``): ``torchrun ... dist_worker.py SCENARIO OUT``.

Scenarios (every rank builds the same tiny model, SAEs and task in-process):

- ``run OUT``: ``corrsteer.pipeline.run`` (pruned) into OUT;
- ``collect OUT [--resume] [--kill-rank R --kill-at OFFSET]``: ``collect`` into OUT; rank R
  sends itself SIGKILL right after the window ending at OFFSET is written;
- ``exit OUT`` / ``hang OUT``: rank 1 exits at once (or sleeps) while rank 0 goes to the
  collection's first exchange; rank 0 writes the error it got to ``OUT/rank0.json``.

Each rank writes ``OUT/rank<r>.json`` (status and error) when it gets that far.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import build_tiny_model, build_tiny_sae, build_tiny_tokenizer  # noqa: E402
from test_collection import ParityTask  # noqa: E402

from corrsteer.config import RunConfig  # noqa: E402
from corrsteer.method import distributed  # noqa: E402
from corrsteer.method.collection import collect  # noqa: E402

SAES = {l: build_tiny_sae(32, 48, "relu", seed=20 + l, layer=l) for l in (0, 1, 2)}
RUN = dict(task="parity", model="tiny", sae="tiny", n_train=24, n_val=8, n_test=12, batch_size=4,
           checkpoint_every=8, progress=False, n_boot=200, mode="pruned", scale=8.0)
COLLECT = dict(batch_size=3, checkpoint_every=8, progress=False)
N_COLLECT = 22


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["run", "collect", "exit", "hang"])
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-rank", type=int, default=-1)
    p.add_argument("--kill-at", type=int, default=-1)
    args = p.parse_args()
    out = Path(args.out)
    model, tok, task = build_tiny_model("llama"), build_tiny_tokenizer(), ParityTask()
    report: dict = {"status": "started"}
    with distributed.launched() as world:
        try:
            if args.scenario == "run":
                from corrsteer.pipeline import run

                run(RunConfig(out=str(out), **RUN), model=model, tokenizer=tok, task=task, saes=SAES)
            elif args.scenario == "collect":
                def on_checkpoint(offset: int) -> None:
                    if world.rank == args.kill_rank and offset == args.kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                collect(model, tok, task, {l: SAES[l] for l in (0, 2)}, task.samples("train", N_COLLECT),
                        out_dir=out, resume=args.resume, on_checkpoint=on_checkpoint, **COLLECT)
            else:
                if world.rank == 1:
                    if args.scenario == "exit":
                        os._exit(3)
                    time.sleep(3600)
                start = time.perf_counter()
                try:
                    collect(model, tok, task, {0: SAES[0]}, task.samples("train", 4), progress=False)
                finally:
                    report["waited_s"] = time.perf_counter() - start
            report["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - the test reads it
            report.update(status="error", type=type(exc).__name__, error=str(exc), trace=traceback.format_exc())
        (out / f"rank{world.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
