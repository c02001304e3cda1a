"""Labelled responses for measuring refusal detectors, and the measures themselves.

- :func:`xstest_completions`: the development set, 900 real responses of two chat models
  to the XSTest prompts, each labelled by two people (``xstest_completions/`` under the
  shared datasets; see its README). A full or a partial refusal counts as a refusal.
- :func:`read_labelled`: the project's own JSON-lines fixtures
  (``{"response": str, "is_refusal": bool}``).
- :func:`binary_metrics`: accuracy, precision, recall and F1 of boolean predictions.

Example:
    >>> rows = xstest_completions()                      # doctest: +SKIP
    >>> sorted({r["model"] for r in rows})               # doctest: +SKIP
    ['llama2orig', 'mistralinstruct']
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from corrsteer.tasks.data import dataset_dir, read_csv

DATASET = "xstest_completions"
FILE_PATTERN = "xstest_v2_completions_{model}_gpteval.csv"
DEV_MODELS = {"llama2orig": "Llama-2-70b-chat (original system prompt)", "mistralinstruct": "Mistral-7B-Instruct"}
COLUMNS = ("id", "type", "prompt", "completion", "final_label", "gpt4_label")
LABELS = ("1_full_compliance", "2_full_refusal", "3_partial_refusal")


def xstest_completions(data_dir: str | os.PathLike | None = None, models: Sequence[str] = tuple(DEV_MODELS),
                       verify: bool = True) -> list[dict]:
    """The human-labelled XSTest responses of ``models``.

    Args:
        data_dir: a datasets root (holding ``xstest_completions/``) or the folder itself;
            None searches ``$CORRSTEER_DATA`` and ``../shared/datasets``.
        models: file stems, a subset of :data:`DEV_MODELS`.
        verify: check each file against the datasets' ``SHA256SUMS``.

    Returns:
        one dict per response: ``model``, ``id``, ``type``, ``prompt``, ``completion``,
        ``final_label``, ``is_refusal`` (bool), ``gpt4_label`` and ``gpt4_refusal``
        (bool, or None where GPT-4's answer is not one of the three labels).

    Raises:
        CorrsteerError: the dataset folder is not found (the message lists where it looked).
        ValueError: an unknown model, or a row whose ``final_label`` is not one of :data:`LABELS`.
    """
    unknown = [m for m in models if m not in DEV_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(DEV_MODELS)}")
    folder = dataset_dir(DATASET, FILE_PATTERN.format(model="*"), data_dir)
    rows = []
    for model in models:
        path = Path(folder) / FILE_PATTERN.format(model=model)
        for i, row in enumerate(read_csv(path, COLUMNS, check=verify), 2):
            label, gpt4 = row["final_label"].strip(), row["gpt4_label"].strip()
            if label not in LABELS:
                raise ValueError(f"{path}:{i}: final_label {label!r} is not one of {LABELS}")
            rows.append({"model": model, "id": row["id"], "type": row["type"], "prompt": row["prompt"],
                         "completion": row["completion"], "final_label": label,
                         "is_refusal": label != LABELS[0], "gpt4_label": gpt4,
                         "gpt4_refusal": (gpt4 != LABELS[0]) if gpt4 in LABELS else None})
    return rows


def read_labelled(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON-lines file of ``{"response": str, "is_refusal": bool, ...}``.

    Raises:
        ValueError: a row lacks either key (the message names the file and line), or no rows.
    """
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("response"), str) or not isinstance(row.get("is_refusal"), bool):
                raise ValueError(f"{path}:{i}: need 'response' (str) and 'is_refusal' (bool)")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no labelled rows")
    return rows


def binary_metrics(pred: Sequence[bool], gold: Sequence[bool]) -> dict:
    """Accuracy, precision, recall and F1 of ``pred`` against ``gold`` (refusal = positive).

    Args:
        pred: predicted labels.
        gold: true labels, same length.

    Returns:
        dict with ``n``, ``n_refusal``, ``accuracy``, ``precision``, ``recall``, ``f1`` and
        ``tp``/``fp``/``tn``/``fn``; precision (recall) is 0.0 when nothing is predicted
        (present).
    """
    if len(pred) != len(gold):
        raise ValueError(f"pred has {len(pred)} labels but gold has {len(gold)}")
    tp = sum(bool(p) and bool(g) for p, g in zip(pred, gold))
    fp = sum(bool(p) and not g for p, g in zip(pred, gold))
    fn = sum((not p) and bool(g) for p, g in zip(pred, gold))
    tn = len(gold) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(gold), "n_refusal": tp + fn, "accuracy": (tp + tn) / len(gold) if gold else 0.0,
            "precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "tn": tn, "fn": fn}
