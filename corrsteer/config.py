"""The one vocabulary of corrsteer, and the configuration of a run.

Every choice that more than one module accepts is spelled once here (METHOD.md names
in brackets); every module checks its arguments against these tuples.

``RunConfig`` holds every option of ``corrsteer run`` (and of its stages ``collect``,
``select``, ``eval``); the command line is generated from its fields (each field's
``help`` metadata is the option's help text) and the pipeline reads nothing else.
``RunConfig.check()`` rejects bad values with a ``ValueError`` that names the option
and its valid values.

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

# SAE sites a hook name can name (METHOD.md §1); SAELens spells them blocks.{L}.hook_{site}.
SITES = ("resid_post", "resid_pre", "resid_mid", "mlp_out", "attn_out")
# The sites capture() and steer() attach to: the residual stream after / before a decoder layer.
HOOK_SITES = ("resid_post", "resid_pre")
ARCHITECTURES = ("jumprelu", "relu", "topk")  # SAE activation functions (METHOD.md §1)
POOLS = ("max", "mean")  # pooling over positions (METHOD.md §3)
POSITIONS = ("generation", "all")  # METHOD.md §2; "all" adds the prompt positions (ablation)
MODES = ("single", "global", "all", "pruned")  # selection modes (METHOD.md §5)
KINDS = ("binary", "pearson")  # reward kinds of the accumulator (METHOD.md §4)
SIGNS = ("positive", "negative")  # sign of a feature's correlation
BACKENDS = ("auto", "core", "torch")
# The coefficient of a negatively correlated feature: the paper's mean over rewarded samples (near zero by
# construction, so the intervention is almost empty), or the mean over unrewarded samples, where it fires.
NEGATIVE_COEFFICIENTS = ("mean_pos", "mean_neg")  # where capture() pools: the C core, or torch on the model's device
# Selection methods (corrsteer.method.baselines): CorrSteer, its controls and baselines; plus "scale-S" (S > 0).
METHODS = ("corrsteer", "random", "shuffled", "negative", "diff-in-means", "mi", "fisher")


def check_choice(name: str, value: object, choices: tuple[str, ...], allow_none: bool = False) -> str | None:
    """Return ``value`` if it is one of ``choices`` (or None when allowed), else raise ``ValueError``.

    Args:
        name: the option's name as the user wrote it (e.g. ``"mode"``).
        value: the given value.
        choices: the valid values.
        allow_none: accept ``None`` (meaning "use the default").
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")
    return value


def parse_scale(method: str) -> float:
    """``"scale-1.5"`` -> 1.5; ``ValueError`` unless S is a finite positive number."""
    try:
        value = float(method[len("scale-"):])
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"method={method!r}: write scale-S with S a positive number, e.g. scale-0.5")
    return value


def check_method(method: object) -> str:
    """``method`` if it is one of ``METHODS`` or ``scale-S`` with S a finite positive number, else ``ValueError``."""
    if isinstance(method, str) and method.startswith("scale-"):
        parse_scale(method)
        return method
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid; choose one of {', '.join(METHODS)} or scale-S "
                         "(e.g. scale-0.5)")
    return str(method)


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field whose metadata carries the command-line help (and choices, metavar)."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class RunConfig:
    """Every option of a CorrSteer run (collect -> select -> evaluate -> report)."""

    task: str = _opt(None, "task name (see `corrsteer info`)")
    model: str = _opt("gemma-3-270m", "embedded model name, local HF dir, .gguf file or hub id")
    sae: str = _opt("default", "SAE path, comma list of paths, or a set we train once and cache: 'default' (2,048 "
                               "latents), or the experimental 'default-8k' and 'default-16k' (8,192 and 16,384 "
                               "latents on 1M tokens, 1-2 h on 2 cores; both fail the quality bar, 32-56% and 47% "
                               "dead latents, README 'Our SAEs')")
    data_dir: str | None = _opt(None, "folder with the task's data files (default: the task's)")
    layers: tuple[int, ...] | None = _opt(None, "layers to use: 3,6,9 | 2-5 | all (default: every SAE's layer)")
    n_train: int = _opt(1000, "collection samples (METHOD.md §4)")
    n_val: int = _opt(100, "validation samples for global/pruned")
    n_test: int = _opt(500, "test samples (METHOD.md §6)")
    mode: str = _opt("all", "selection mode (METHOD.md §5)", choices=MODES)
    method: str = _opt("corrsteer", "selection method: corrsteer, a control or a baseline, or scale-S",
                       choices=METHODS + ("scale-S",))
    controls: bool = _opt(False, "collect the controls' extra state too (forced by shuffled/diff-in-means/fisher)")
    pool: str | None = _opt(None, "pooling over positions (default: the task's)", choices=POOLS)
    positions: str = _opt("generation", "positions pooled while collecting (eval: positions steered; all = "
                          "the prompt too, as llama.cpp does)", choices=POSITIONS)
    seed: int = _opt(0, "seed of the sample draw and of the bootstrap")
    device: str | None = _opt(None, "torch device, e.g. cpu or cuda (default: the loader's)")
    batch_size: int = _opt(16, "sequences per batched generation pass")
    top_k: int = _opt(1, "features per layer and sign in a candidate (k > 1: steered together)")
    negative_coefficient: str = _opt("mean_pos", "coefficient of a negative feature, subtracted as -|c|: its mean "
                                     "activation over rewarded (the paper's) or unrewarded samples",
                                     choices=NEGATIVE_COEFFICIENTS)
    scale: float | str = _opt(1.0, "factor on every steering coefficient, or 'auto': the best of --scale-grid on the "
                                    "validation split whose degenerate continuations stay within 10 points of unsteered")
    scale_grid: tuple[float, ...] = _opt((0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
                                         "scales tried by --scale auto, e.g. 0.5,1,2")
    out: str | None = _opt(None, "output folder (default: runs/<task>-<mode>[-<method>]-seed<seed>)")
    resume: bool = _opt(False, "continue an interrupted collection found in the output folder")
    checkpoint_every: int = _opt(256, "samples between collection checkpoints")
    progress: bool = _opt(True, "show progress bars")
    train: bool = _opt(True, "train the default SAEs of layers not in the cache yet (minutes per layer); "
                             "--no-train refuses instead")
    max_new_tokens: int | None = _opt(None, "override the task's generation length")
    n_boot: int = _opt(10000, "bootstrap resamples for the 95% interval of the difference")
    task_options: dict[str, Any] = _opt({}, "keyword option of the task, KEY=VALUE, repeatable (a value that "
                                            "parses as JSON is used as such)", metavar="KEY=VALUE")

    def check(self) -> RunConfig:
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
        check_choice("negative_coefficient", self.negative_coefficient, NEGATIVE_COEFFICIENTS)
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
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int)
                                                or isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1):
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be a positive integer or None")
        if self.scale != "auto" and (isinstance(self.scale, bool) or not isinstance(self.scale, (int, float))
                                     or not math.isfinite(self.scale)):
            raise ValueError(f"scale={self.scale!r} must be a finite number or 'auto'")
        grid = tuple(self.scale_grid)
        if not grid or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0
                           for x in grid):
            raise ValueError(f"scale_grid={self.scale_grid!r} must be a non-empty list of positive numbers")
        self.scale_grid = grid
        if self.scale == "auto" and self.n_val < 1:
            raise ValueError("scale='auto' calibrates on the validation split: n_val must be >= 1")
        if self.layers is not None:
            layers = tuple(self.layers)
            if not layers or any(not isinstance(l, int) or isinstance(l, bool) or l < 0 for l in layers):
                raise ValueError(f"layers={self.layers!r} must be a non-empty list of layer indices >= 0")
            if len(set(layers)) != len(layers):
                raise ValueError(f"layers={self.layers!r} lists a layer twice")
            self.layers = tuple(sorted(layers))
        if not isinstance(self.task_options, dict):
            raise ValueError(f"task_options={self.task_options!r} must be a dict of keyword options")
        return self

    def out_dir(self) -> str:
        """The output folder: ``out`` or ``runs/<task>-<mode>[-<method>]-seed<seed>`` (method unless corrsteer)."""
        if self.out:
            return self.out
        method = "" if self.method == "corrsteer" else f"-{self.method}"
        return f"runs/{self.task}-{self.mode}{method}-seed{self.seed}"

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (the original is never modified)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (layers as a list)."""
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        d["scale_grid"] = list(self.scale_grid)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RunConfig fields {unknown}; valid fields: {sorted(names)}")
        d = dict(d)
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        if d.get("scale_grid") is not None:
            d["scale_grid"] = tuple(d["scale_grid"])
        return cls(**d)


def fingerprint(d: dict[str, Any]) -> str:
    """A short stable hash of a JSON-ready dict (sorted keys), for checkpoints and caches."""
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
