"""Ranks as threads of one process, for fast tests of the distributed logic.

``run_ranks(n, fn)`` runs ``fn(world)`` for ranks ``0 … n-1`` in ``n`` threads, each with a
:class:`corrsteer.method.distributed.World` whose exchanges go through a shared
:class:`ThreadComm` hub (objects pass through pickle, as they do between processes). A
rank that raises breaks the hub, so that the others get a ``CorrsteerError`` at their
next exchange instead of waiting: the threads' stand-in for a rank that died.

Each rank needs its own model object (hooks are per model): build one per rank.
"""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corrsteer.errors import CorrsteerError
from corrsteer.method.distributed import World


class _Hub:
    """A reusable barrier that a dying rank breaks; a rank already let through stays through."""

    def __init__(self, n: int, timeout: float) -> None:
        self.n, self.timeout = n, timeout
        self.cond = threading.Condition()
        self.count = self.generation = 0
        self.dead = False
        self.slots: list[Any] = [None] * n

    def wait(self) -> None:
        with self.cond:
            if self.dead:
                raise threading.BrokenBarrierError
            generation = self.generation
            self.count += 1
            if self.count == self.n:
                self.count, self.generation = 0, generation + 1
                self.cond.notify_all()
                return
            if not self.cond.wait_for(lambda: self.generation != generation or self.dead, self.timeout):
                raise TimeoutError("a thread-rank waited too long")
            if self.generation == generation:
                raise threading.BrokenBarrierError

    def abort(self) -> None:
        with self.cond:
            self.dead = True
            self.cond.notify_all()


class ThreadComm:
    """The :class:`corrsteer.method.distributed.Comm` of one thread-rank."""

    def __init__(self, hub: _Hub, rank: int) -> None:
        self.hub, self.rank = hub, rank

    def _wait(self, what: str) -> None:
        try:
            self.hub.wait()
        except threading.BrokenBarrierError:
            raise CorrsteerError(f"rank {self.rank}: another rank died before {what}") from None

    def barrier(self, what: str) -> None:
        self._wait(what)

    def all_gather(self, obj: Any, what: str) -> list[Any]:
        self._wait(what)
        self.hub.slots[self.rank] = pickle.dumps(obj)
        self._wait(what)
        out = [pickle.loads(blob) for blob in self.hub.slots]
        self._wait(what)
        return out

    def gather(self, obj: Any, what: str) -> list[Any] | None:
        out = self.all_gather(obj, what)
        return out if self.rank == 0 else None

    def broadcast(self, obj: Any, what: str) -> Any:
        return self.all_gather(obj if self.rank == 0 else None, what)[0]


def run_ranks(n: int, fn: Callable[[World], Any], timeout: float = 120.0) -> list[Any]:
    """``[fn(world_0), …, fn(world_{n-1})]``, run concurrently; each entry is the result or the exception."""
    hub = _Hub(n, timeout)
    results: list[Any] = [None] * n

    def main(rank: int) -> None:
        try:
            results[rank] = fn(World(rank=rank, size=n, comm=ThreadComm(hub, rank)))
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            results[rank] = exc
            hub.abort()

    threads = [threading.Thread(target=main, args=(r,), name=f"rank{r}") for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def unwrap(results: list[Any]) -> list[Any]:
    """The results, raising the exception of the rank that failed first (not a "another rank died")."""
    errors = [r for r in results if isinstance(r, BaseException)]
    for r in sorted(errors, key=lambda e: "another rank died" in str(e)):
        raise r
    return results


def assert_same_run(one: Path, two: Path, validated: bool = True) -> None:
    """Run folders ``one`` (one process) and ``two`` (two ranks) hold the same results, timings and paths aside.

    ``validated``: the run validated candidates (``pruned``/``global``), which the comparison then covers.
    """
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, two))
    ta, tb = a.pop("timings"), b.pop("timings")
    a["config"].pop("out"), b["config"].pop("out")
    a.pop("command"), b.pop("command")  # the command line names its --out
    assert a == b and (ta["ranks"], tb["ranks"]) == (1, 2)
    assert not validated or a["selection"]["candidates"], "pruned validated no candidate: the test is too weak"
    for name in ("generations.jsonl", "selection/selection.json", "collection/records.jsonl"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
