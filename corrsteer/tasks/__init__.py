"""Benchmark tasks: splits, prompts, answer extraction and rewards.

Example:
    >>> from corrsteer.tasks import get_task
    >>> task = get_task("arithmetic")
    >>> sample = task.samples("train", n=1, seed=0)[0]
    >>> task.reward(sample, " " + str(sample.target))
    1

Built-in names (see :func:`list_tasks`): ``arithmetic`` (generated, needs no data),
``mmlu``, ``bbq_ambig``, ``bbq_disambig``, ``gsm8k``, ``harmbench``, ``xstest``,
``emgsd``, ``truthfulqa``, ``sst2``, the generation-level ``sentiment`` (is a free
continuation positive, by a judge trained on SST-2) and ``food`` (does it mention food),
and ``custom`` (any CSV/JSONL + template + label column). A reward that is any function of
the completion is a few lines: :class:`~corrsteer.tasks.continuation.ContinuationTask` and
:func:`register_task`. Data is read from ``../shared/datasets`` or a ``data_dir`` (see
:mod:`corrsteer.tasks.data`). Nothing here imports torch.
"""

from __future__ import annotations

from corrsteer.tasks.base import Sample, Task, get_task, list_tasks, register_task
from corrsteer.tasks.continuation import ContinuationTask
from corrsteer.tasks.refusal import classifier_available, is_refusal, refusal_accuracy

_BUILTIN = {
    "arithmetic": "corrsteer.tasks.synthetic:ArithmeticTask",
    "mmlu": "corrsteer.tasks.mmlu:MMLUTask",
    "bbq_ambig": "corrsteer.tasks.bbq:bbq_ambig",
    "bbq_disambig": "corrsteer.tasks.bbq:bbq_disambig",
    "gsm8k": "corrsteer.tasks.gsm8k:GSM8KTask",
    "harmbench": "corrsteer.tasks.harmbench:HarmBenchTask",
    "xstest": "corrsteer.tasks.xstest:XSTestTask",
    "emgsd": "corrsteer.tasks.emgsd:EMGSDTask",
    "truthfulqa": "corrsteer.tasks.truthfulqa:TruthfulQATask",
    "sst2": "corrsteer.tasks.sst2:SST2Task",
    "custom": "corrsteer.tasks.custom:CustomTask",
    "sentiment": "corrsteer.tasks.sentiment:SentimentTask",
    "food": "corrsteer.tasks.topic:FoodTopicTask",
}
for _name, _factory in _BUILTIN.items():
    register_task(_name, _factory, overwrite=True)

__all__ = ["ContinuationTask", "Sample", "Task", "classifier_available", "get_task", "is_refusal", "list_tasks",
           "refusal_accuracy", "register_task"]
