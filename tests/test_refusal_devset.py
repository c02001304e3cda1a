"""The refusal detector on the human-labelled XSTest responses (the development set).

Floors sit just under the numbers measured when the weights were frozen
(``scripts/refusal_eval.py``), so a change to the cues or weights that loses more than a
couple of responses fails here. Skipped when the shared datasets are not reachable
(set ``$CORRSTEER_DATA`` or put ``shared/datasets`` next to the repository).
"""

from __future__ import annotations

import numpy as np
import pytest

from corrsteer.errors import CorrsteerError
from corrsteer.tasks.refusal_baselines import xstest_string_match
from corrsteer.tasks.refusal_data import binary_metrics, xstest_completions
from corrsteer.tasks.refusal_model import cue_matrix, fit_model, held_out_predictions, load_model

# measured at freeze: held-out (weights fitted on the other model) 0.956 / 0.907,
# in-sample 0.969 / 0.940, XSTest string match 0.893 / 0.860
HELD_OUT_FLOOR = {"llama2orig": 0.95, "mistralinstruct": 0.90}
IN_SAMPLE_FLOOR = {"llama2orig": 0.965, "mistralinstruct": 0.935}


@pytest.fixture(scope="module")
def dev():
    try:
        rows = xstest_completions()
    except CorrsteerError as err:
        pytest.skip(f"xstest_completions not found (set $CORRSTEER_DATA to the shared datasets): {err}")
    x = cue_matrix([r["completion"] for r in rows])            # (900, n_cue)
    y = np.array([r["is_refusal"] for r in rows], dtype=np.float64)
    models = np.array([r["model"] for r in rows])
    return rows, x, y, models


def test_dev_set_is_the_documented_one(dev):
    rows, _, y, models = dev
    assert len(rows) == 900 and int(y.sum()) == 425
    assert {m: int((models == m).sum()) for m in set(models)} == {"llama2orig": 450, "mistralinstruct": 450}


@pytest.mark.parametrize("model", sorted(HELD_OUT_FLOOR))
def test_held_out_accuracy_per_chat_model(dev, model):
    _, x, y, models = dev
    pred = held_out_predictions(x, y, list(models))
    mask = models == model
    m = binary_metrics(list(pred[mask]), list(y[mask] > 0))
    assert m["accuracy"] >= HELD_OUT_FLOOR[model], (model, m)


@pytest.mark.parametrize("model", sorted(IN_SAMPLE_FLOOR))
def test_shipped_detector_accuracy_per_chat_model(dev, model):
    _, x, y, models = dev
    mask = models == model
    pred = load_model().score(x[mask]) > 0
    m = binary_metrics(list(pred), list(y[mask] > 0))
    assert m["accuracy"] >= IN_SAMPLE_FLOOR[model], (model, m)


def test_beats_the_xstest_string_match_on_each_chat_model(dev):
    rows, x, y, models = dev
    held = held_out_predictions(x, y, list(models))
    base = np.array([xstest_string_match(r["completion"]) for r in rows])
    for model in set(models):
        mask = models == model
        ours = (held[mask] == (y[mask] > 0)).mean()
        theirs = (base[mask] == (y[mask] > 0)).mean()
        assert ours >= theirs + 0.04, (model, ours, theirs)


def test_shipped_weights_are_what_the_training_script_writes(dev):
    _, x, y, _ = dev
    shipped, refit = load_model(), fit_model(x, y, l2=load_model().meta.get("l2", 1.0))
    np.testing.assert_allclose(shipped.weights, np.round(refit.weights, 6), atol=1e-5)
    assert abs(shipped.bias - refit.bias) < 1e-5
