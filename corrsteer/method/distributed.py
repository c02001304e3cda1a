"""Several processes, one result: corrsteer on ``torchrun`` (``torch.distributed``).

Every rank runs the same command::

    torchrun --nproc-per-node 2 -m corrsteer run --task arithmetic --out runs/x

:func:`init` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group: gloo on the CPU, NCCL
when the device is CUDA (each rank then uses ``cuda:LOCAL_RANK``, and a gloo group beside
it carries corrsteer's own exchanges, which are bytes and Python objects, never GPU
tensors). Without that environment nothing is initialised and :func:`current` is the
one-process world, so a plain ``corrsteer run`` is unchanged.

Work is dealt out in fixed units (a collection window, a generation batch):
:meth:`World.share` gives each rank a contiguous run of units, a function of the number
of units and the world size only, and results are put back together in unit order,
whatever the timing. Every exchange starts with a monitored barrier: a rank that died
or hangs is named in the error after ``CORRSTEER_DIST_TIMEOUT`` seconds (default 1800)
instead of the others waiting forever.

Example:
    >>> world = current()                          # one process unless launched by torchrun
    >>> world.rank, world.size, list(world.share(5))
    (0, 1, [0, 1, 2, 3, 4])
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from corrsteer.errors import CorrsteerError

log = logging.getLogger(__name__)

__all__ = ["ENV_TIMEOUT", "Comm", "TorchComm", "World", "current", "device_for", "finish", "init", "launched", "use"]

ENV_TIMEOUT = "CORRSTEER_DIST_TIMEOUT"  # seconds a rank waits for the others at an exchange
DEFAULT_TIMEOUT = 1800.0
_LAUNCH = ("RANK", "WORLD_SIZE")  # set by torchrun (and by hand for a manual launch)


class Comm(Protocol):
    """How ranks exchange Python objects (``torch.distributed`` here; threads in the tests)."""

    def barrier(self, what: str) -> None: ...

    def all_gather(self, obj: Any, what: str) -> list[Any]: ...

    def gather(self, obj: Any, what: str) -> list[Any] | None: ...

    def broadcast(self, obj: Any, what: str) -> Any: ...


@dataclass
class World:
    """This process's place among the ranks, and the exchanges between them."""

    rank: int = 0  # this process's rank, 0 … size-1
    size: int = 1  # number of ranks
    local_rank: int = 0  # rank on this node (the CUDA device index)
    backend: str | None = None  # "gloo" | "nccl" | None (one process, nothing initialised)
    timeout: float = DEFAULT_TIMEOUT  # seconds to wait for the other ranks at an exchange
    comm: Comm | None = field(default=None, repr=False)  # None for one process

    @property
    def is_main(self) -> bool:
        """True on rank 0: the rank that writes the run folder and shows progress."""
        return self.rank == 0

    def share(self, n_units: int) -> range:
        """This rank's units of ``range(n_units)``: a contiguous run, sizes differing by one at most."""
        return range(n_units * self.rank // self.size, n_units * (self.rank + 1) // self.size)

    def all_gather(self, obj: Any, what: str) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj] if self.comm is None else self.comm.all_gather(obj, what)

    def gather(self, obj: Any, what: str) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0; None on the other ranks."""
        return [obj] if self.comm is None else self.comm.gather(obj, what)

    def broadcast(self, obj: Any, what: str) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return obj if self.comm is None else self.comm.broadcast(obj, what)

    def agree(self, fn: Callable[[], Any], what: str) -> list[Any]:
        """Run ``fn()`` on every rank; every rank gets every rank's result, or every rank raises.

        A user error (``ValueError``, ``TypeError``, ``OSError``) or a ``CorrsteerError`` on
        one rank is raised on all of them (the lowest failing rank's, naming it), so that no
        rank is left waiting for the others at the next exchange.
        """
        try:
            outcome: tuple[str, Any] = ("ok", fn())
        except (ValueError, TypeError, OSError, CorrsteerError) as exc:
            if self.comm is None:
                raise
            outcome = ("error", (type(exc).__name__, str(exc)))
        results = self.all_gather(outcome, what)
        for rank, (status, value) in enumerate(results):
            if status == "error":
                kind, message = value
                cls = CorrsteerError if kind == "CorrsteerError" else (TypeError if kind == "TypeError"
                                                                      else ValueError)
                raise cls(message if rank == self.rank else f"rank {rank}: {message}")
        return [value for _, value in results]

    def check_same(self, settings: Mapping[str, Any], what: str) -> None:
        """Raise ``ValueError`` on every rank unless every rank has the same ``settings``."""
        every = self.all_gather(dict(settings), what)
        for rank, other in enumerate(every):
            if other != every[0]:
                keys = sorted(k for k in set(other) | set(every[0]) if other.get(k) != every[0].get(k))
                diff = "; ".join(f"{k}: rank 0 {every[0].get(k)!r}, rank {rank} {other.get(k)!r}" for k in keys)
                raise ValueError(f"the ranks disagree on {what} ({diff}); every rank must run the same command "
                                 "with the same files (SAEs, data, model)")


_CURRENT = World()
_LOCAL = threading.local()  # a world set by use() for this thread only


def current() -> World:
    """The world of :func:`use` in this thread, else the one :func:`init` joined, else one process."""
    return getattr(_LOCAL, "world", None) or _CURRENT


@contextlib.contextmanager
def use(world: World) -> Iterator[World]:
    """Make ``world`` :func:`current` in this thread while the block runs (ranks as threads, in tests)."""
    before = getattr(_LOCAL, "world", None)
    _LOCAL.world = world
    try:
        yield world
    finally:
        _LOCAL.world = before


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None:
        if default is None:
            raise ValueError(f"{name} is not set: launch with `torchrun --nproc-per-node N -m corrsteer ...`, or "
                             f"set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT by hand")
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} must be an integer") from None


def timeout_from_env() -> float:
    """``CORRSTEER_DIST_TIMEOUT`` in seconds (default 1800)."""
    text = os.environ.get(ENV_TIMEOUT)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{ENV_TIMEOUT}={text!r} must be a positive number of seconds")
    return value


def device_for(device: str | None, world: World | None = None) -> str | None:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` when several ranks share a node."""
    world = current() if world is None else world
    if device is not None and device == "cuda" and world.size > 1:
        return f"cuda:{world.local_rank}"
    return device


def init(device: str | None = None, timeout: float | None = None) -> World:
    """Join torchrun's process group (gloo on the CPU, NCCL on CUDA) when launched by it.

    Args:
        device: the run's device (``--device``); a CUDA device selects NCCL.
        timeout: seconds to wait for the other ranks (None: ``CORRSTEER_DIST_TIMEOUT`` or 1800).

    Returns:
        The :class:`World`, also what :func:`current` returns until :func:`finish`.

    Raises:
        ValueError: a partial launch environment (``RANK`` without ``MASTER_ADDR``...), a
            rank out of range, CUDA asked for but missing.
        CorrsteerError: the other ranks could not be reached.
    """
    global _CURRENT
    if not any(name in os.environ for name in _LAUNCH):
        _CURRENT = World()
        return _CURRENT
    size, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    local = _env_int("LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={size}: the rank must be in 0 … WORLD_SIZE-1")
    wait = timeout_from_env() if timeout is None else float(timeout)
    if size == 1:
        _CURRENT = World(rank=0, size=1, local_rank=local, timeout=wait)
        return _CURRENT
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ValueError(f"{name} is not set but RANK/WORLD_SIZE are: launch with `torchrun --nproc-per-node N "
                             f"-m corrsteer ...`, or set MASTER_ADDR and MASTER_PORT (rank 0's address and a free "
                             "port) on every rank")
    import torch
    import torch.distributed as dist

    cuda = device is not None and str(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise ValueError(f"--device {device} on local rank {local}, but this node has "
                             f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA devices")
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    delta = datetime.timedelta(seconds=wait)
    try:
        dist.init_process_group(backend, timeout=delta, rank=rank, world_size=size)
        group = dist.new_group(backend="gloo", timeout=delta) if cuda else None
    except (RuntimeError, ValueError) as exc:
        raise CorrsteerError(f"rank {rank} of {size} could not join the process group at "
                             f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} ({exc})") from exc
    _CURRENT = World(rank=rank, size=size, local_rank=local, backend=backend, timeout=wait,
                     comm=TorchComm(group, rank, size, wait))
    log.info("rank %d of %d (local rank %d, %s) joined", rank, size, local, backend)
    return _CURRENT


def finish() -> None:
    """Leave the process group (if :func:`init` joined one); :func:`current` is one process again."""
    global _CURRENT
    if _CURRENT.comm is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _CURRENT = World()


@contextlib.contextmanager
def launched(device: str | None = None) -> Iterator[World]:
    """``with launched(cfg.device) as world:`` :func:`init` ... :func:`finish`, also after an error."""
    world = init(device)
    try:
        yield world
    finally:
        finish()


class TorchComm:
    """:class:`Comm` over ``torch.distributed`` (a gloo group), every exchange behind a monitored barrier."""

    def __init__(self, group: Any, rank: int, size: int, timeout: float) -> None:
        self.group, self.rank, self.size, self.timeout = group, rank, size, timeout

    def _lost(self, what: str, exc: BaseException) -> CorrsteerError:
        text = str(exc)
        late = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", text)
        if late:
            ranks = late.group(1).strip()
            return CorrsteerError(f"rank {ranks} did not reach {what} within {self.timeout:.0f} s: it died or "
                                  f"hangs (see its log); the windows every rank finished are kept, rerun with "
                                  f"--resume")
        if self.rank != 0:
            return CorrsteerError(f"rank {self.rank} lost rank 0 at {what}: rank 0 died, hangs or stopped on an "
                                  f"error (see its log) ({text.splitlines()[0] if text else type(exc).__name__})")
        return CorrsteerError(f"rank 0 lost the other ranks at {what} ({text.splitlines()[0] if text else exc!r})")

    def _run(self, what: str, fn: Callable[[], Any]) -> Any:
        import torch.distributed as dist

        try:
            dist.monitored_barrier(group=self.group, timeout=datetime.timedelta(seconds=self.timeout),
                                   wait_all_ranks=True)
            return fn()
        except RuntimeError as exc:  # DistBackendError and gloo's own errors are RuntimeErrors
            raise self._lost(what, exc) from exc

    def barrier(self, what: str) -> None:
        self._run(what, lambda: None)

    def all_gather(self, obj: Any, what: str) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        self._run(what, lambda: dist.all_gather_object(out, obj, group=self.group))
        return out

    def gather(self, obj: Any, what: str) -> list[Any] | None:
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.size if self.rank == 0 else None
        self._run(what, lambda: dist.gather_object(obj, out, dst=0, group=self.group))
        return out

    def broadcast(self, obj: Any, what: str) -> Any:
        import torch.distributed as dist

        box = [obj if self.rank == 0 else None]
        self._run(what, lambda: dist.broadcast_object_list(box, src=0, group=self.group))
        return box[0]
