"""--scale auto: the best validation score among the scales that keep the text fluent; the test split untouched."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from corrsteer.method import calibration
from corrsteer.method.features import Feature, Selection

SEL = Selection(mode="all", features=[Feature(1, 0, 1, 0.5, 2.0, 2.0)], directions={1: np.eye(4, dtype=np.float32)[:1]},
                coefficients={1: [2.0]})
FLUENT, LOOP = "a pizza and a bottle of wine", "food food food food food"


def fake_generation(monkeypatch: pytest.MonkeyPatch, table: dict[float, tuple[float, float]]) -> list[float]:
    """generate_records stand-in: at scale s, a share table[s][0] of rewards and table[s][1] of degenerate text."""
    seen: list[float] = []

    def generate_records(model: Any, tok: Any, task: Any, samples: Any, interventions: Any = None, **kw: Any):
        s = 0.0 if not interventions else float(np.linalg.norm(interventions[0][1])) / 2.0  # |v| = 2 * scale
        seen.append(s)
        score, bad = table[s]
        n = len(samples)
        return [{"reward": int(i < score * n), "completion": LOOP if i >= n - bad * n else FLUENT}
                for i in range(n)]

    monkeypatch.setattr(calibration, "generate_records", generate_records)
    return seen


def test_the_best_score_within_the_fluency_guard_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {0.0: (0.2, 0.0), 0.5: (0.3, 0.0), 1.0: (0.5, 0.05), 2.0: (0.6, 0.1), 4.0: (0.9, 0.5)}
    seen = fake_generation(monkeypatch, table)
    scale, curve = calibration.calibrate_scale(None, None, None, SEL, list(range(20)), grid=(4, 1, 0.5, 2),
                                               progress=False)
    assert seen == [0.0, 0.5, 1.0, 2.0, 4.0]  # unsteered first, then the grid in order: one pass each
    assert scale == 2.0  # 4.0 scores higher but breaks half the continuations (guard: +10 points)
    assert [p["scale"] for p in curve] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert [p["allowed"] for p in curve] == [True, True, True, True, False]
    assert [p["chosen"] for p in curve] == [False, False, False, True, False]
    assert curve[0]["score"] == 0.2 and curve[4]["degenerate"] == 0.5


def test_ties_go_to_the_smaller_scale_and_nothing_allowed_keeps_the_smallest(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_generation(monkeypatch, {0.0: (0.2, 0.0), 1.0: (0.5, 0.0), 2.0: (0.5, 0.0)})
    scale, _ = calibration.calibrate_scale(None, None, None, SEL, list(range(10)), grid=(1, 2), progress=False)
    assert scale == 1.0
    fake_generation(monkeypatch, {0.0: (0.2, 0.0), 1.0: (0.5, 0.5), 2.0: (0.7, 0.9)})
    scale, curve = calibration.calibrate_scale(None, None, None, SEL, list(range(10)), grid=(1, 2), progress=False)
    assert scale == 1.0 and not any(p["allowed"] for p in curve[1:])


def test_bad_grids_and_empty_samples_are_refused() -> None:
    for grid in ((), (0.0, 1.0), (float("inf"),)):
        with pytest.raises(ValueError, match="grid"):
            calibration.calibrate_scale(None, None, None, SEL, [1], grid=grid)
    with pytest.raises(ValueError, match="guard"):
        calibration.calibrate_scale(None, None, None, SEL, [1], guard=-0.1)
    with pytest.raises(ValueError, match="n_val"):
        calibration.calibrate_scale(None, None, None, SEL, [])


def test_scale_auto_on_the_pipeline_touches_the_test_split_once(tmp_path: Any, tiny_llama: Any, tiny_tokenizer: Any,
                                                               make_tiny_sae: Any) -> None:
    from corrsteer.config import RunConfig
    from corrsteer.pipeline import run
    from corrsteer.report.records import read_generations_jsonl
    from test_collection import ParityTask

    saes = {l: make_tiny_sae(32, 48, "relu", seed=20 + l, layer=l) for l in (0, 1, 2)}
    cfg = RunConfig(task="parity", n_train=24, n_val=8, n_test=12, batch_size=6, checkpoint_every=12, progress=False,
                    n_boot=200, out=str(tmp_path), mode="all", scale="auto", scale_grid=(0.5, 8.0))
    results = run(cfg, model=tiny_llama, tokenizer=tiny_tokenizer, task=ParityTask(), saes=saes)
    curve = results["selection"]["scale_curve"]
    assert [p["scale"] for p in curve] == [0.0, 0.5, 8.0] and sum(p["chosen"] for p in curve) == 1
    assert results["selection"]["scale"] == next(p["scale"] for p in curve if p["chosen"])
    assert len(read_generations_jsonl(tmp_path / "generations.jsonl")) == 24  # 12 test samples x 2 conditions
    assert (tmp_path / "figures" / "scale_curve.png").is_file()
    assert "Scale chosen on the validation split" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="n_val"):
        RunConfig(task="t", scale="auto", n_val=0).check()
    with pytest.raises(ValueError, match="'auto'"):
        RunConfig(task="t", scale="big").check()
