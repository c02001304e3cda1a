"""Configuration of a CorrSteer run: one dataclass, a comment per field.

``RunConfig`` holds every option of ``corrsteer run`` (and of its stages
``collect``, ``select``, ``eval``); the CLI builds one from its flags and the
pipeline reads nothing else. ``RunConfig.check()`` rejects bad values with a
``ValueError`` that names the option and its valid values.

Example:
    >>> from corrsteer.config import RunConfig
    >>> cfg = RunConfig(task="arithmetic", n_train=64, mode="pruned")
    >>> cfg.check().mode
    'pruned'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

MODES = ("single", "global", "all", "pruned")  # METHOD.md §5
POOLS = ("max", "mean")  # METHOD.md §3
POSITIONS = ("generation", "all")  # METHOD.md §2; "all" adds the prompt positions (ablation)
# Selection methods (corrsteer.baselines): CorrSteer, its controls and baselines; plus "scale-S" (S > 0).
METHODS = ("corrsteer", "random", "shuffled", "negative", "diff-in-means", "mi", "fisher")


def check_method(method: object) -> str:
    """``method`` if it is one of ``METHODS`` or ``scale-S`` with S a finite positive number, else ``ValueError``."""
    if isinstance(method, str) and method.startswith("scale-"):
        try:
            value = float(method[len("scale-"):])
        except ValueError:
            value = float("nan")
        if math.isfinite(value) and value > 0:
            return method
        raise ValueError(f"method={method!r}: write scale-S with S a positive number, e.g. scale-0.5")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid; choose one of {', '.join(METHODS)} or scale-S "
                         "(e.g. scale-0.5)")
    return str(method)


def check_choice(name: str, value: object, choices: tuple[str, ...], allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (or None when allowed).

    Args:
        name: the option's name as the user wrote it (e.g. ``"mode"``).
        value: the given value.
        choices: the valid values.
        allow_none: accept ``None`` (meaning "use the default").
    """
    if value is None and allow_none:
        return
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")


@dataclass
class RunConfig:
    """Every option of a CorrSteer run (collect -> select -> evaluate -> report)."""

    task: str  # task name, see corrsteer.tasks.list_tasks()
    model: str = "gemma-3-270m"  # embedded model name, local HF dir, *.gguf file or hub id
    sae: str = "default"  # SAE path, comma list of paths, or "default" (trained SAEs for the model)
    data_dir: str | None = None  # where the task's data files live (None: the task's default)
    layers: tuple[int, ...] | None = None  # decoder layers to collect at (None: every SAE's layer)
    n_train: int = 1000  # training samples for collection (METHOD.md §4)
    n_val: int = 100  # validation samples for global/pruned (unused by single/all)
    n_test: int = 500  # test samples for the evaluation (METHOD.md §6)
    mode: str = "all"  # selection mode: single | global | all | pruned (METHOD.md §5)
    pool: str | None = None  # max | mean pooling over positions (None: the task's default_pool)
    positions: str = "generation"  # positions pooled while collecting: generation | all
    seed: int = 0  # seed of the train/validation/test splits and of the bootstrap
    device: str | None = None  # torch device ("cpu", "cuda"); None: the model loader's default
    batch_size: int = 16  # sequences per batched generation pass
    top_k: int = 1  # features per layer and sign in a candidate (k > 1: steered together)
    scale: float = 1.0  # factor on every steering coefficient (ablation)
    out: str | None = None  # output folder (None: runs/<task>-<mode>-seed<seed>)
    resume: bool = False  # continue an interrupted collection found in the output folder
    checkpoint_every: int = 256  # samples between collection checkpoints
    progress: bool = True  # show tqdm progress bars
    max_new_tokens: int | None = None  # override the task's generation length (None: the task's)
    n_boot: int = 10000  # bootstrap resamples for the 95% interval of the difference
    task_options: dict[str, Any] = field(default_factory=dict)  # extra keyword options for get_task
    method: str = "corrsteer"  # selection method: corrsteer or a control/baseline (corrsteer.baselines)
    controls: bool = False  # collect the controls' extra state too (forced by shuffled/diff-in-means/fisher)

    def check(self) -> "RunConfig":
        """Validate every field; return ``self`` so calls chain.

        Raises:
            ValueError: naming the option, the bad value and the valid values.
        """
        if not isinstance(self.task, str) or not self.task:
            raise ValueError("task must be a task name; see `corrsteer info` or corrsteer.tasks.list_tasks()")
        check_choice("mode", self.mode, MODES)
        check_method(self.method)
        check_choice("pool", self.pool, POOLS, allow_none=True)
        check_choice("positions", self.positions, POSITIONS)
        for name in ("n_train", "batch_size", "top_k", "checkpoint_every", "n_boot"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("n_val", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative integer")
        if self.mode in ("global", "pruned") and self.n_val < 1:
            raise ValueError(f"mode={self.mode!r} validates candidates: n_val must be >= 1 (got {self.n_val})")
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1):
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be a positive integer or None")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise ValueError(f"scale={self.scale!r} must be a finite number")
        if self.layers is not None:
            layers = tuple(self.layers)
            if not layers or any(not isinstance(l, int) or isinstance(l, bool) or l < 0 for l in layers):
                raise ValueError(f"layers={self.layers!r} must be a non-empty list of layer indices >= 0")
            if len(set(layers)) != len(layers):
                raise ValueError(f"layers={self.layers!r} lists a layer twice")
            self.layers = tuple(sorted(layers))
        return self

    def out_dir(self) -> str:
        """The output folder: ``out`` or ``runs/<task>-<mode>[-<method>]-seed<seed>`` (method unless corrsteer)."""
        if self.out:
            return self.out
        method = "" if self.method == "corrsteer" else f"-{self.method}"
        return f"runs/{self.task}-{self.mode}{method}-seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (layers as a list)."""
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RunConfig fields {unknown}; valid fields: {sorted(names)}")
        d = dict(d)
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        return cls(**d)


def fingerprint(d: dict[str, Any]) -> str:
    """A short stable hash of a JSON-ready dict (sorted keys), for checkpoints and caches."""
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
