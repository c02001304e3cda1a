"""Tests for corrsteer.report and corrsteer.report.figures: files, numbers, valid PNGs, plot kinds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.collections import LineCollection

from corrsteer.method.statistics import compare
from corrsteer.report import figures
from corrsteer.report.markdown import write_comparison_report, write_report
from corrsteer.report.tables import compare_table, verdict

ROOT = Path(__file__).resolve().parents[1]
CATS = ["Age", "Gender_identity", "Race_ethnicity", "SES"]


def _results(n_layers: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    base = (rng.random(240) < 0.5).astype(int)
    steer = np.where(rng.random(240) < 0.2, (rng.random(240) < 0.8).astype(int), base)
    res = compare(base, steer, categories=[CATS[i % 4] for i in range(240)], n_boot=500)
    res.update(
        task="bbq-ambig", model="tiny-random", sae="tiny-topk", mode="pruned", seed=0, n_train=64,
        metrics={"baseline": {"bias_ambig": 0.125, "per_category": {"Age": 0.5}},
                 "steered": {"bias_ambig": 0.0625, "per_category": {"Age": 0.25}}},
        features=[{"layer": 2, "index": 4242, "r": 0.3125, "coefficient": 1.75},
                  {"layer": 4, "index": 17, "r": -0.1875, "coefficient": 2.5}],
        selection={"baseline_val_score": 0.5, "candidates": [
            {"layer": layer, "index": 100 + layer, "sign": sign, "r": 0.1 if sign == "+" else -0.1,
             "coefficient": 1.0, "val_score": 0.5 + 0.02 * (layer - 2), "val_n": 50}
            for layer in range(n_layers) for sign in ("+", "-")]},
        timings={"collect": 12.5, "evaluate": 300.0},
        config={"pool": "max", "layers": list(range(n_layers)), "generation": {"batch_size": 8}},
    )
    return res


def _correlations(n_layers: int = 6) -> dict:
    return {layer: {"positive": [(1000 + layer, 0.2 + 0.01 * layer, 3.0), (5, 0.05, 1.0)],
                    "negative": [{"index": 2000 + layer, "r": -0.1 - 0.01 * layer, "coefficient": 2.0}]}
            for layer in range(n_layers)}


def _assert_png(path: Path) -> None:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, (path, img.shape)
    assert img[..., :3].std() > 0.01, f"{path} is blank"


@pytest.fixture
def captured(monkeypatch):
    """Figures passed to figures._save, so tests can inspect their axes."""
    figs = []
    save = figures._save

    def spy(fig, path):
        figs.append(fig)
        return save(fig, path)
    monkeypatch.setattr(figures, "_save", spy)
    return figs


def test_write_report_writes_markdown_with_the_numbers_and_valid_pngs(tmp_path):
    res = _results()
    path = write_report(tmp_path / "run", res, _correlations())
    assert path == tmp_path / "run" / "report.md"
    md = path.read_text()
    assert md.startswith("# corrsteer report: bbq-ambig · tiny-random · pruned")
    assert f"**Verdict:** {verdict(res)}." in md
    assert compare_table({"pruned": res}) in md                   # main table
    assert compare_table(res["per_category"]) in md               # per-category table
    for cat in CATS:
        assert f"| {cat} |" in md
    assert "| bias_ambig | 0.125 | 0.0625 | -0.0625 |" in md       # task metrics
    assert "| 2 | 4242 | + | 0.3125 | 1.75 |" in md                 # features steered
    assert "| 4 | 17 | − | -0.1875 | 2.5 |" in md
    assert "| 0 | 1000 | 0.2 | 3 | 2000 | -0.1 | 2 |" in md       # top correlations layer 0
    assert "| 5 | 105 | + | 0.1 | 1 | 56.0% | yes |" in md           # selection candidates
    assert "| 300 s (5.0 min) |" in md and "| generation.batch_size | 8 |" in md
    assert "| test samples (paired) | 240 |" in md and "| n_train | 64 |" in md
    links = [line.split("](")[1].rstrip(")\n") for line in md.splitlines() if line.startswith("![")]
    assert sorted(links) == ["figures/category_scores.png", "figures/layer_correlations.png",
                             "figures/selection.png"]
    for link in links:
        _assert_png(path.parent / link)


def test_write_report_handles_minimal_results_and_json_roundtrip(tmp_path):
    res = compare([0, 1, 0, 1, 1], [1, 1, 0, 1, 0], n_boot=100)
    minimal = {"baseline": res["baseline"], "steered": res["steered"]}
    md = write_report(tmp_path / "min", minimal).read_text()
    assert "no verdict" in md and "| steered | 60.0 | 60.0 |" in md
    assert sorted(p.name for p in (tmp_path / "min" / "figures").iterdir()) == ["category_scores.png"]
    # results.json turns layer keys into strings and tuples into lists
    full = json.loads(json.dumps({**_results(), "correlations": _correlations()}))
    md = write_report(tmp_path / "json", full).read_text()
    assert "figures/layer_correlations.png" in md
    _assert_png(tmp_path / "json" / "figures" / "layer_correlations.png")


def test_write_report_says_when_nothing_was_steered(tmp_path):
    res = compare([0, 1, 1], [0, 1, 1], n_boot=50)
    res.update(mode="pruned", features=[])
    md = write_report(tmp_path, res).read_text()
    assert "No feature was steered" in md
    assert "**Verdict:** no change: steering altered no test reward" in md



def test_write_report_names_featureless_vectors(tmp_path):
    # diff-in-means steers residual vectors with no SAE feature: not "nothing was steered"
    res = compare([0, 1, 1], [1, 1, 1], n_boot=50)
    res.update(mode="all", method="diff-in-means", features=[], steered_layers=[6, 9])
    md = write_report(tmp_path, res).read_text()
    assert "No feature was steered" not in md
    assert "`diff-in-means` vectors steer the residual stream directly at layer(s) 6, 9" in md

def test_write_report_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="results lacks steered"):
        write_report(tmp_path, {"baseline": {"score": 0.5, "n": 4}})
    with pytest.raises(TypeError, match="results must be a dict"):
        write_report(tmp_path, [1, 2])
    with pytest.raises(ValueError, match="feature entry 0"):
        write_report(tmp_path, _results(), {0: {"positive": ["not a feature"]}})


def test_figures_are_points_or_bars_never_lines_across_categories(tmp_path, captured):
    write_report(tmp_path, _results(), _correlations())
    write_comparison_report(tmp_path / "cmp", {"a": _results(), "b": _results(seed=1)}, "t")
    assert len(captured) == 4
    for fig in captured:
        for ax in fig.axes:
            for line in ax.get_lines():
                drawn = line.get_linestyle() not in ("None", "none", "", " ")
                assert not (drawn and len(line.get_xdata()) > 2), (
                    f"{ax.get_title()!r} draws a line through {len(line.get_xdata())} categories")


def test_category_figure_dodges_conditions_and_shows_error_bars(tmp_path, captured):
    res = _results()
    figures.plot_category_scores(res, tmp_path / "c.png")
    ax = captured[0].axes[0]
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(bars) == 2                                   # baseline, steered
    for c in bars:
        segs = c.get_segments()
        assert len(segs) == 1 + len(CATS)                   # "all" + each category
        assert all(abs(s[1][1] - s[0][1]) > 1.0 for s in segs)  # visible bars (pp)
    xs = [np.asarray(line.get_xdata(), float) for line in ax.get_lines() if line.get_marker() == "o"]
    assert np.allclose(xs[1] - xs[0], 0.3)                  # dodged, not on top of each other
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["all"] + CATS


def test_layer_correlation_figure_uses_top_feature_per_sign(tmp_path, captured):
    figures.plot_layer_correlations(_correlations(3), tmp_path / "l.png")
    ax = captured[0].axes[0]
    assert not ax.patches  # points, not bars
    ys = sorted(round(float(line.get_ydata()[0]), 6) for line in ax.get_lines() if line.get_marker() == "o")
    assert ys == [-0.12, -0.11, -0.1, 0.2, 0.21, 0.22]
    assert {t.get_text() for t in ax.texts} >= {"#1000", "#2002"}
    assert "\n" in ax.get_title()  # the title wraps instead of being clipped


def test_write_comparison_report(tmp_path):
    rows = {"all": _results(seed=2), "pruned": _results(seed=3),
            "no delta": {"baseline": {"score": 0.5, "n": 10}, "steered": {"score": 0.5, "n": 10}},
            "diff-in-means": {**_results(seed=4), "features": [], "steered_layers": [3, 9]}}
    rows["all"]["command"] = "corrsteer run --task bbq-ambig --mode all"
    path = write_comparison_report(tmp_path, rows, title="BBQ ambiguous")
    md = path.read_text()
    assert md.startswith("# BBQ ambiguous") and compare_table(rows) in md
    assert f"- **pruned** (2 features steered): {verdict(rows['pruned'])}." in md
    assert "- **diff-in-means** (2 residual vectors steered, no SAE feature):" in md
    assert "- all: `corrsteer run --task bbq-ambig --mode all`" in md
    _assert_png(tmp_path / "figures" / "deltas.png")
    with pytest.raises(ValueError, match="non-empty"):
        write_comparison_report(tmp_path, {}, "t")
    with pytest.raises(ValueError, match=r"rows\['x'\] lacks baseline"):
        write_comparison_report(tmp_path, {"x": {"delta": 0.1}}, "t")


def test_reports_never_use_pyplot_or_show(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    code = (
        "import sys, json; from corrsteer.report.markdown import write_report; "
        f"res = json.load(open({str(tmp_path / 'results.json')!r})); "
        f"write_report({str(tmp_path)!r}, res); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    _assert_png(tmp_path / "figures" / "selection.png")


def test_many_categories_go_on_the_y_axis(tmp_path, captured):
    cats = [f"subject_{i:02d}" for i in range(30)]
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2, 300)
    res = compare(base, np.where(rng.random(300) < 0.2, 1 - base, base),
                  categories=[cats[i % 30] for i in range(300)], n_boot=100)
    _assert_png(figures.plot_category_scores(res, tmp_path / "many.png"))
    ax = captured[0].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "all (n=300)" and labels[1:] == [f"{c} (n=10)" for c in cats]
    ys = [np.asarray(line.get_ydata(), float) for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(ys) == 2 and np.allclose(ys[1] - ys[0], 0.3)
    for line in ax.get_lines():
        assert line.get_linestyle() in ("None", "none", "", " ") or len(line.get_xdata()) <= 2
