"""Continuation tasks: the model continues an opener, the reward is a property of what it wrote.

A :class:`ContinuationTask` prompts a base model with an opener ("The hotel we stayed
at was"), lets it write up to ``max_new_tokens`` (24) tokens, stops at the end of the
first sentence (". ", "! ", "? ") or line, and scores the generated text alone (the opener is not judged) with a *judge*: any
function of the completion that returns a bool or a number. The reward is 1 iff the
judge's value is at least ``threshold`` (0.5), so "steer towards the reward" means
"make the model write text the judge accepts". With a chat tokenizer the opener is
sent as "Continue this text: <opener>".

Openers carry a *group*; the splits are carved by group with ``split_seed`` (70/10/20
by default), so no group (for ``sentiment``: no subject such as "the hotel we stayed
at") is shared between train, validation and test. A plain list of openers is its own
group per opener.

Built-in tasks on this class: ``sentiment`` (:mod:`corrsteer.tasks.sentiment`) and
``food`` (:mod:`corrsteer.tasks.topic`). A user task takes a few lines::

    import re
    from corrsteer.tasks import register_task
    from corrsteer.tasks.continuation import ContinuationTask

    COLOURS = re.compile(r"\\b(red|green|blue|yellow|purple|orange|pink|brown|black|white|grey|gray)\\b", re.I)
    OPENERS = [f"{who} walked into the {room} and" for who in ("Anna", "My uncle", "The guest", "Our teacher")
               for room in ("kitchen", "garden", "hall", "office", "shop", "museum", "station")]

    register_task("colour", lambda data_dir=None, **opts: ContinuationTask(
        openers=OPENERS, judge=lambda text: bool(COLOURS.search(text)), task_name="colour", **opts))

after which ``get_task("colour")`` (and, in the same process, the pipeline) accepts it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from corrsteer.tasks.base import SPLITS, Sample, Task, carve

FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
Judge = Callable[[str], object]


def judge_value(value: object) -> float | None:
    """A judge's return value as a number: bool/int/float as is, None as None; else TypeError."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float)):
        return float(value)
    try:  # NumPy scalars
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"a judge must return a bool, a number or None, got {type(value).__name__}: {value!r}") from None


class ContinuationTask(Task):
    """Continue an opener; reward 1 iff a judge accepts the generated continuation.

    Options:
        openers: a list of opener strings, a list of ``(opener, group)`` or
            ``(opener, group, category)`` tuples, or a mapping split -> list of openers
            (used as the splits, no carving). Subclasses build their own pool instead.
        judge: function of the completion -> bool, number or None (None counts as 0).
        task_name: the task's name in results (default ``"continuation"``).
        threshold: reward = 1 iff ``judge(completion) >= threshold``.
        fractions: shares of the groups, default ``{"train": 0.7, "validation": 0.1, "test": 0.2}``;
            validation and test get at least one group each, train the rest.
        max_new_tokens: generation budget (default 24).
    """

    name = "continuation"
    max_new_tokens = 24
    stop_strings = ("\n", ". ", "! ", "? ")  # the first sentence: SST-2, the sentiment judge's data, is sentences
    default_pool = "max"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 openers: Sequence[str] | Sequence[tuple] | Mapping[str, Sequence[str]] | None = None,
                 judge: Judge | None = None, task_name: str | None = None, threshold: float = 0.5,
                 fractions: Mapping[str, float] | None = None, max_new_tokens: int | None = None) -> None:
        super().__init__(data_dir, split_seed, chat)
        if judge is not None and not callable(judge):
            raise TypeError(f"judge must be a function of the completion, got {type(judge).__name__}")
        self.openers = openers
        self._judge = judge
        if task_name is not None:
            self.name = str(task_name)
        self.threshold = float(threshold)
        self.fractions = dict(fractions or FRACTIONS)
        if set(self.fractions) != set(SPLITS) or not all(0 <= float(v) <= 1 for v in self.fractions.values()):
            raise ValueError(f"fractions must give {list(SPLITS)} as numbers in [0, 1], got {self.fractions}")
        if max_new_tokens is not None:
            if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
                raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
            self.max_new_tokens = max_new_tokens

    # ---- what subclasses may override --------------------------------------------
    def pool(self) -> list[tuple[str, str, str | None]]:
        """All openers as ``(opener, group, category)``; by default from the ``openers`` option."""
        if self.openers is None or isinstance(self.openers, (str, Mapping)):
            raise ValueError(f"task {self.name!r} needs openers=[...] (a list of strings or "
                             "(opener, group[, category]) tuples) or a mapping split -> openers")
        out = []
        for item in self.openers:
            if isinstance(item, str):
                out.append((item, item, None))
            elif isinstance(item, tuple) and len(item) in (2, 3) and all(isinstance(x, str) for x in item):
                out.append((item[0], item[1], item[2] if len(item) == 3 else None))
            else:
                raise TypeError(f"an opener must be a str or an (opener, group[, category]) tuple of str, got {item!r}")
        return out

    def judge(self, completion: str) -> object:
        """The judge's value for a completion (the ``judge`` option by default)."""
        if self._judge is None:
            raise ValueError(f"task {self.name!r} needs judge=<function of the completion>")
        return self._judge(completion)

    # ---- Task interface ----------------------------------------------------------
    def _sample(self, opener: str, group: str, category: str | None) -> Sample:
        if not isinstance(opener, str) or not opener.strip():
            raise ValueError(f"task {self.name!r}: openers must be non-empty strings, got {opener!r}")
        return Sample(id=f"{self.name}:{opener.strip()}", question=opener.strip(), target=1,
                      category=category, meta={"group": group})

    def load_splits(self) -> dict[str, list[Sample]]:
        if isinstance(self.openers, Mapping):
            given = {k: [self._sample(o, o, None) for o in v] for k, v in self.openers.items()}
            missing = [k for k in SPLITS if k not in given]
            if missing:
                raise ValueError(f"task {self.name!r}: openers mapping lacks splits {missing}")
            return given
        items = list(dict.fromkeys(self.pool()))  # drop exact repeats, keep order
        texts = [o.strip() for o, _, _ in items]
        if len(set(texts)) != len(texts):
            dup = next(t for t in texts if texts.count(t) > 1)
            raise ValueError(f"task {self.name!r}: opener {dup!r} appears in more than one group")
        groups = list(dict.fromkeys(g for _, g, _ in items))
        if len(groups) < len(SPLITS):
            raise ValueError(f"task {self.name!r}: need at least {len(SPLITS)} groups of openers, got {len(groups)}")
        # Counts, not fractions, so that each split gets at least one group however few there are.
        counts = {k: max(1, round(self.fractions[k] * len(groups))) for k in ("validation", "test")}
        counts = {"train": len(groups) - sum(counts.values()), **counts}
        parts = carve(groups, counts, self.split_seed)
        split_of = {g: split for split, gs in parts.items() for g in gs}
        out: dict[str, list[Sample]] = {split: [] for split in SPLITS}
        for opener, group, category in items:
            out[split_of[group]].append(self._sample(opener, group, category))
        return out

    def source(self) -> str:
        return "generated openers" if self.openers is None else f"{self.name}: openers given in Python"

    def user_text(self, sample: Sample) -> str:
        return f"Continue this text: {sample.question}"

    def base_prompt(self, sample: Sample) -> str:
        return sample.question

    def extract(self, sample: Sample, completion: str) -> float | None:
        """The judge's value for the completion (a number; None if the judge abstains)."""
        return judge_value(self.judge(completion))

    def target_reward(self, sample: Sample, answer: object | None) -> int:
        return int(answer is not None and float(answer) >= self.threshold)  # type: ignore[arg-type]
