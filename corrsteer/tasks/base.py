"""Task and Sample: what a benchmark must provide to the pipeline, plus split helpers.

A task knows its splits (``train``, ``validation``, ``test``), how to turn a sample
into a prompt (a base-model form and, when the tokenizer has a chat template, a chat
form), its generation settings, how to read an answer out of a completion, and the
reward in {0, 1} that the correlation is computed against (METHOD.md §4).

Splits are carved once per task instance from ``split_seed`` (a task option, default
0) and never change with the ``seed`` passed to :meth:`Task.samples`: that seed only
chooses which ``n`` samples of the split are drawn (a seeded shuffle, so a draw of
``n=100`` is the prefix of a draw of ``n=200`` with the same seed). The test split is
therefore the same set for every run of a task with the same ``split_seed``.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from corrsteer.tasks.data import dataset_dir

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One benchmark item, independent of any prompt template.

    Attributes:
        id: stable identifier across runs: dataset file and row, e.g. ``"bbq/Age.jsonl:17"``.
        question: the task text without any template (context + question for BBQ).
        target: the gold answer: option index (multiple choice), a number (GSM8K),
            ``"refuse"``/``"comply"`` (HarmBench, XSTest).
        options: multiple-choice options in display order (empty for open answers).
        category: the sample's category for per-category tables, or None.
        meta: task-specific fields that metrics need (BBQ polarity, target index, ...).
    """

    id: str
    question: str
    target: object
    options: tuple[str, ...] = ()
    category: str | None = None
    meta: Mapping[str, object] = field(default_factory=dict, hash=False)


def stable_rng(*parts: object) -> np.random.Generator:
    """A NumPy generator seeded from a SHA-256 of ``parts`` (stable across processes).

    Python's ``hash`` is salted per process, so it cannot be used for per-sample seeds.
    """
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def carve(items: Sequence[T], sizes: Mapping[str, float | int], seed: int,
          key: Callable[[T], object] | None = None) -> dict[str, list[T]]:
    """Split ``items`` into disjoint named parts with a seeded shuffle.

    Args:
        items: the pool to split, in a fixed (file) order.
        sizes: split name -> fraction of the pool (floats summing to at most 1) or an
            absolute count (ints). With fractions, the last split takes the remainder,
            so nothing is dropped when the fractions sum to 1.
        seed: shuffle seed; equal seeds give equal splits.
        key: stratify by this key: every stratum is split with the same sizes
            (fractions only), so each split keeps the pool's category proportions.

    Returns:
        split name -> list of items; the parts are disjoint and keep a seeded order.

    Example:
        >>> parts = carve(list(range(10)), {"train": 0.7, "validation": 0.1, "test": 0.2}, seed=0)
        >>> [len(parts[s]) for s in ("train", "validation", "test")]
        [7, 1, 2]
    """
    names = list(sizes)
    values = list(sizes.values())
    fractional = all(isinstance(v, float) for v in values)
    if not fractional and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"sizes must be all fractions (float) or all counts (int), got {dict(sizes)}")
    if any(v < 0 for v in values):
        raise ValueError(f"sizes must be non-negative, got {dict(sizes)}")
    if fractional and sum(values) > 1.0 + 1e-9:
        raise ValueError(f"split fractions sum to {sum(values):.3f} > 1: {dict(sizes)}")
    if not fractional and sum(values) > len(items):
        raise ValueError(f"split counts {dict(sizes)} need {sum(values)} items but the pool has {len(items)}")
    if key is not None and not fractional:
        raise ValueError("stratified carving (key=...) needs fractional sizes")

    groups: dict[object, list[T]] = {}
    for item in items:
        groups.setdefault(key(item) if key is not None else None, []).append(item)
    out: dict[str, list[T]] = {name: [] for name in names}
    for g_index, group_key in enumerate(sorted(groups, key=str)):
        group = groups[group_key]
        order = stable_rng("carve", seed, g_index, group_key).permutation(len(group))
        shuffled = [group[i] for i in order]
        if fractional:
            bounds = np.floor(np.cumsum([0.0] + values) * len(shuffled) + 1e-9).astype(int)
            if abs(sum(values) - 1.0) < 1e-9:
                bounds[-1] = len(shuffled)
        else:
            bounds = np.cumsum([0] + values)
        for i, name in enumerate(names):
            out[name].extend(shuffled[bounds[i]:bounds[i + 1]])
    # Interleave strata again with a seeded shuffle so a prefix is not one category.
    for i, name in enumerate(names):
        order = stable_rng("carve-mix", seed, name).permutation(len(out[name]))
        out[name] = [out[name][j] for j in order]
    return out


class Task(ABC):
    """Base class of every benchmark. Subclasses set the class attributes and implement
    :meth:`load_splits`, :meth:`user_text`, :meth:`extract` and :meth:`target_reward`.

    Attributes:
        name: registry name (``"mmlu"``, ``"bbq_ambig"``, ...).
        max_new_tokens: generation budget per sample.
        stop_strings: a completion is cut at the first of these.
        default_pool: ``"max"`` or ``"mean"`` (METHOD.md §3).
        chat: None = chat form iff the tokenizer has a chat template (the default);
            True/False force one form.
    """

    name: str = "task"
    max_new_tokens: int = 8
    stop_strings: tuple[str, ...] = ("\n",)
    default_pool: str = "max"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None) -> None:
        if not isinstance(split_seed, (int, np.integer)) or isinstance(split_seed, bool):
            raise TypeError(f"split_seed must be an int, got {type(split_seed).__name__}")
        if chat not in (None, True, False):
            raise TypeError(f"chat must be None, True or False, got {chat!r}")
        self.data_dir = data_dir
        self.split_seed = int(split_seed)
        self.chat = chat
        self._splits: dict[str, list[Sample]] | None = None
        self._found: str | None = None

    def locate(self, dataset: str, marker: str) -> Path:
        """The dataset folder (see :func:`corrsteer.tasks.data.dataset_dir`), remembered for :meth:`source`."""
        folder = dataset_dir(dataset, marker, self.data_dir)
        self._found = str(folder)
        return folder

    # ---- what subclasses provide -------------------------------------------------
    @abstractmethod
    def load_splits(self) -> dict[str, list[Sample]]:
        """Read the data and return ``{"train": [...], "validation": [...], "test": [...]}``."""

    @abstractmethod
    def user_text(self, sample: Sample) -> str:
        """The request as a user would type it (used inside the chat template)."""

    def base_prompt(self, sample: Sample) -> str:
        """The prompt for a base (non-chat) model; by default the user text + ``"\\nAnswer:"``."""
        return self.user_text(sample) + "\nAnswer:"

    @abstractmethod
    def extract(self, sample: Sample, completion: str) -> object | None:
        """The answer read from ``completion`` (an option index, a number, ...) or None."""

    # ---- the interface the pipeline uses -----------------------------------------
    def splits(self) -> dict[str, list[Sample]]:
        """All splits, loaded once and checked (non-empty, disjoint ids)."""
        if self._splits is None:
            splits = self.load_splits()
            seen: dict[str, str] = {}
            for split in SPLITS:
                if not splits.get(split):
                    raise ValueError(f"task {self.name!r}: split {split!r} is empty; "
                                     f"check the data files ({self.source()})")
                for s in splits[split]:
                    if s.id in seen:
                        raise ValueError(f"task {self.name!r}: sample id {s.id!r} is in both "
                                         f"{seen[s.id]!r} and {split!r}")
                    seen[s.id] = split
            self._splits = {k: list(splits[k]) for k in SPLITS}
            logger.info("task %s: %s", self.name, {k: len(v) for k, v in self._splits.items()})
        return self._splits

    def samples(self, split: str, n: int | None = None, seed: int = 0) -> list[Sample]:
        """Draw samples from a split.

        Args:
            split: ``"train"``, ``"validation"`` or ``"test"``.
            n: how many; None = the whole split. More than the split holds is an error.
            seed: order of the draw (a seeded shuffle); the split itself does not depend on it.

        Returns:
            list of :class:`Sample`, deterministic given (split_seed, split, n, seed).
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        pool = self.splits()[split]
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise ValueError(f"n must be a non-negative int or None, got {n!r}")
            if n > len(pool):
                raise ValueError(f"task {self.name!r}: asked for n={n} {split} samples but the "
                                 f"split has {len(pool)}; pass n <= {len(pool)} or n=None")
        order = stable_rng("draw", self.name, split, seed).permutation(len(pool))
        chosen = [pool[i] for i in order]
        return chosen if n is None else chosen[:n]

    def prompt(self, sample: Sample, tokenizer: Any = None) -> str:
        """The prompt string: chat-template form iff the tokenizer has one (or ``chat=True``)."""
        use_chat = self.chat
        if use_chat is None:
            use_chat = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
        if use_chat:
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise ValueError(f"task {self.name!r} was built with chat=True but the tokenizer "
                                 "has no chat_template; pass chat=None or a chat tokenizer")
            messages = [{"role": "user", "content": self.user_text(sample)}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.base_prompt(sample)

    def target_reward(self, sample: Sample, answer: object | None) -> int:
        """1 iff the extracted ``answer`` is the desired one; the default compares to the target."""
        return int(answer is not None and answer == sample.target)

    def reward(self, sample: Sample, completion: str) -> int:
        """0 or 1: whether ``completion`` is a correct/desired answer for ``sample``."""
        if not isinstance(completion, str):
            raise TypeError(f"completion must be a str, got {type(completion).__name__}")
        return int(self.target_reward(sample, self.extract(sample, completion)))

    def categories(self) -> list[str]:
        """Sorted categories over all splits (empty when the task has none)."""
        cats = {s.category for split in self.splits().values() for s in split}
        return sorted(c for c in cats if c is not None)

    def metrics(self, records: list[dict]) -> dict:
        """Extra task metrics over evaluated records (BBQ bias scores); ``{}`` by default."""
        return {}

    def source(self) -> str:
        """Where the data comes from (a path or "generated")."""
        if self._found is not None:
            return self._found
        return str(self.data_dir) if self.data_dir is not None else "the default data locations"

    def describe(self) -> str:
        """A short description: the class docstring's summary, the splits and their sizes."""
        doc = (type(self).__doc__ or self.name).strip().split("\n\n")[0]
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits().items())
        return f"{self.name}: {' '.join(doc.split())}\nsplits: {sizes} (split_seed={self.split_seed})\nsource: {self.source()}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split_seed={self.split_seed})"


_REGISTRY: dict[str, Callable[..., Task] | str] = {}


def register_task(name: str, factory: Callable[..., Task] | str, overwrite: bool = False) -> None:
    """Register a task factory under ``name`` (a callable, or ``"module:attr"`` imported lazily).

    The factory is called as ``factory(data_dir=..., **options)`` and returns a :class:`Task`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"task name must be a non-empty str, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"task {name!r} is already registered; pass overwrite=True to replace it")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise TypeError("factory must be a callable or a 'module:attr' string")
    _REGISTRY[name] = factory


def list_tasks() -> list[str]:
    """Names accepted by :func:`get_task`, sorted."""
    return sorted(_REGISTRY)


def get_task(name: str, data_dir: str | None = None, **options: Any) -> Task:
    """Build a task by name.

    Args:
        name: one of :func:`list_tasks` (``"mmlu"``, ``"bbq_ambig"``, ``"arithmetic"``, ...).
        data_dir: folder holding the dataset (or the datasets root); None = default search.
        **options: task options (``categories=``, ``split_seed=``, ``path=`` for ``custom``...).

    Returns:
        the task instance (data is read lazily on the first :meth:`Task.samples` call).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(list_tasks())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        import importlib
        module, attr = factory.split(":")
        factory = getattr(importlib.import_module(module), attr)
    try:
        return factory(data_dir=data_dir, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise TypeError(f"task {name!r}: {exc}") from exc
        raise
