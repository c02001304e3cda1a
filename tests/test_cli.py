"""The command line: parsing, option errors, headline, and an end-to-end smoke run on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from corrsteer.cli import build_parser, main
from corrsteer.cli.common import config_from_args, parse_layers
from corrsteer.cli.run import DEMO, format_headline
from corrsteer.config import RunConfig


def test_python_dash_m_help_lists_every_subcommand() -> None:
    out = subprocess.run([sys.executable, "-m", "corrsteer", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for cmd in ("run", "collect", "select", "eval", "report", "demo", "train-sae", "info"):
        assert cmd in out.stdout


def test_importing_the_cli_does_not_import_torch() -> None:
    code = "import sys, corrsteer.cli, corrsteer.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("text, expected", [
    (None, None), ("all", None), ("3", (3,)), ("3,6, 9", (3, 6, 9)), ("2-4,7", (2, 3, 4, 7)),
])
def test_parse_layers(text: str | None, expected: tuple[int, ...] | None) -> None:
    assert parse_layers(text) == expected


@pytest.mark.parametrize("text", ["a", "3,,4", "5-2", "1.5"])
def test_parse_layers_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="--layers"):
        parse_layers(text)


def test_config_from_args_overrides_only_given_options() -> None:
    args = build_parser().parse_args(["demo", "--n-train", "10", "--no-progress", "--layers", "1,2"])
    cfg = config_from_args(args, DEMO)
    assert cfg.n_train == 10 and cfg.progress is False and cfg.layers == (1, 2)
    assert cfg.task == DEMO["task"] and cfg.mode == DEMO["mode"] and cfg.n_test == DEMO["n_test"]
    assert cfg.resume is False and cfg.scale == 1.0
    args = build_parser().parse_args(["run", "--task", "arithmetic", "--resume", "--scale", "2"])
    cfg = config_from_args(args)
    assert cfg.resume is True and cfg.scale == 2.0 and cfg.mode == RunConfig(task="x").mode


@pytest.mark.parametrize("argv, message", [
    (["run", "--task", "arithmetic", "--mode", "best"], "mode='best' is not valid; choose one of single, global, all, pruned"),
    (["run", "--task", "arithmetic", "--pool", "sum"], "pool='sum' is not valid; choose one of max, mean"),
    (["run", "--task", "arithmetic", "--positions", "prompt"], "positions='prompt' is not valid"),
    (["run", "--task", "arithmetic", "--n-train", "0"], "n_train=0 must be a positive integer"),
    (["run", "--task", "arithmetic", "--mode", "pruned", "--n-val", "0"], "n_val must be >= 1"),
    (["run", "--task", "arithmetic", "--layers", "2,2"], "lists a layer twice"),
    (["run"], "--task is required"),
])
def test_bad_options_exit_2_with_a_message_naming_the_option(argv: list[str], message: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"corrsteer {argv[0]}: error:") and message in err


def test_report_without_results_is_a_clear_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "no results in" in capsys.readouterr().err


def test_debug_flag_shows_the_exception() -> None:
    with pytest.raises(ValueError, match="mode="):
        main(["--debug", "run", "--task", "arithmetic", "--mode", "best"])


def test_runconfig_round_trips_and_rejects_unknown_fields() -> None:
    cfg = RunConfig(task="arithmetic", layers=(5, 2), mode="global").check()
    assert cfg.layers == (2, 5)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert RunConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown RunConfig fields"):
        RunConfig.from_dict({**d, "modes": "all"})
    assert cfg.out_dir() == "runs/arithmetic-global-seed0"


def test_format_headline_shows_scores_interval_p_ser_and_features() -> None:
    results = {"task": "arithmetic", "model": "tiny", "mode": "all", "baseline": {"score": 0.4, "n": 50},
               "steered": {"score": 0.5, "n": 50}, "delta": 0.1, "ci95": [0.02, 0.18], "mcnemar_p": 0.021,
               "ser": 0.2, "pos": 8, "neg": 2,
               "features": [{"layer": 1, "index": 7, "sign": "+", "r": 0.31, "coefficient": 2.5}]}
    text = format_headline(results)
    assert "baseline  40.0%  (n=50)" in text and "steered   50.0%  (n=50)" in text
    assert "+10.0 pp, 95% CI [+2.0, +18.0] pp" in text and "McNemar p = 0.021" in text
    assert "SER = 0.20 (POS 8, NEG 2)" in text and "L1 +#7 (r=+0.310" in text
    results.update(features=[], ser=None, selection={"note": "nothing kept: x"})
    text = format_headline(results)
    assert "features  none (nothing kept: x)" in text and "SER = n/a" in text
    assert "validated" not in text  # no validation ran (mode all)
    results["selection"] = {"note": "n", "baseline_val_score": 0.5, "candidates": [
        {"layer": 2, "index": 9, "sign": "+", "val_score": 0.56, "kept": True},
        {"layer": 2, "index": 4, "sign": "-", "val_score": 0.48, "kept": False}]}
    assert "validated unsteered 50.0%; L2 +#9 56.0% kept, L2 -#4 48.0%\n" in format_headline(results)


@pytest.fixture
def saved_tiny(tmp_path, tiny_llama, tiny_tokenizer, make_tiny_sae) -> tuple[str, str]:
    """A tiny random model saved with save_pretrained, and three SAE folders: (model_dir, "sae0,sae1,sae2")."""

    model_dir = tmp_path / "model"
    tiny_llama.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    paths = [str((make_tiny_sae(32, 48, "relu", seed=30 + l, layer=l)).save(tmp_path / f"sae{l}"))
             for l in range(3)]
    return str(model_dir), ",".join(paths)


def _small(out) -> list[str]:
    return ["--n-train", "12", "--n-val", "4", "--n-test", "8", "--batch-size", "6", "--n-boot", "200",
            "--device", "cpu", "--no-progress", "--out", str(out)]


def test_cli_run_smoke(tmp_path, saved_tiny, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir, saes = saved_tiny
    out = tmp_path / "run"
    code = main(["run", "--model", model_dir, "--sae", saes, "--task", "arithmetic", "--mode", "all",
                 "--layers", "0,2", *_small(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "baseline" in printed.out and "McNemar p" in printed.out and "report" in printed.out
    doc = json.loads((out / "results.json").read_text())
    assert doc["task"] == "arithmetic" and doc["config"]["layers"] == [0, 2]
    assert set(doc["correlations"]) == {"0", "2"}
    assert (out / "report.md").is_file() and (out / "generations.jsonl").is_file()


def test_cli_stages_one_by_one_and_resume_mismatch(tmp_path, saved_tiny,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from test_collection import ParityTask

    from corrsteer.tasks import register_task

    register_task("parity", ParityTask, overwrite=True)
    model_dir, saes = saved_tiny
    out = tmp_path / "stages"
    common = ["--model", model_dir, "--sae", saes, "--task", "parity", "--mode", "pruned", *_small(out)]
    assert main(["collect", *common]) == 0
    assert "collected 12 samples at layers [0, 1, 2]" in capsys.readouterr().out
    assert main(["collect", *common, "--resume", "--pool", "mean"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert main(["select", *common]) == 0
    assert "selection (pruned)" in capsys.readouterr().out
    assert main(["eval", *common]) == 0
    assert "verdict" in capsys.readouterr().out
    assert main(["report", "--out", str(out)]) == 0
    assert (out / "report.md").is_file()
    assert main(["eval", *common, "--selection", str(tmp_path / "missing")]) == 2
    assert "lacks selection.json" in capsys.readouterr().err


def test_cli_bad_model_path_is_a_clear_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--task", "arithmetic", "--model", str(tmp_path), *_small(tmp_path / "o")]) == 2
    assert "config.json" in capsys.readouterr().err


@pytest.mark.model
@pytest.mark.slow
def test_cli_demo_on_the_embedded_model(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--n-train", "32", "--n-val", "8", "--n-test", "16", "--no-progress",
                 "--out", str(tmp_path)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "baseline" in printed.out and "features" in printed.out
    assert (tmp_path / "report.md").is_file()


@pytest.mark.parametrize("field, value", [("scale", float("inf")), ("scale", float("nan")), ("top_k", 0),
                                          ("batch_size", True), ("max_new_tokens", 0), ("layers", (-1,)),
                                          ("n_test", -1), ("task", "")])
def test_runconfig_check_rejects_bad_values(field: str, value: object) -> None:
    cfg = RunConfig(task="arithmetic")
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=field if field != "task" else "task must be"):
        cfg.check()


def test_info_prints_build_cache_and_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("corrsteer ") and "blas:" in out and "cache:" in out and "arithmetic" in out


def test_train_sae_delegates_to_the_sae_trainer(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train-sae", "--help"])
    assert exc.value.code == 0
    assert "corrsteer train-sae" in capsys.readouterr().out


def test_help_lists_labels_and_compare_saes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "labels" in out and "compare-saes" in out


@pytest.mark.parametrize("command, prog", [("labels", "corrsteer labels"), ("compare-saes", "corrsteer compare-saes")])
def test_labels_and_compare_saes_delegate_to_their_own_parsers(command: str, prog: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog}") and "--dataset" in out


def test_task_option_fills_task_options_with_json_values() -> None:
    from corrsteer.cli.common import parse_task_options

    args = build_parser().parse_args(["run", "--task", "custom", "--task-option", "path=a.csv",
                                      "--task-option", "template=Review: {text}", "--task-option", "max_new_tokens=8",
                                      "--task-option", 'labels=["neg", "pos"]', "--task-option", "chat=false"])
    cfg = config_from_args(args)
    assert cfg.task_options == {"path": "a.csv", "template": "Review: {text}", "max_new_tokens": 8,
                                "labels": ["neg", "pos"], "chat": False}
    assert parse_task_options(None) == {} and parse_task_options(["x="]) == {"x": ""}
    for bad in (["path"], ["=a"], ["a b=1"], ["a=1", "a=2"]):
        with pytest.raises(ValueError, match="--task-option"):
            parse_task_options(bad)


def test_bad_task_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--task", "custom", "--task-option", "path"]) == 2
    assert "must be KEY=VALUE" in capsys.readouterr().err


def test_cli_run_custom_task_from_a_csv_in_one_command(tmp_path, saved_tiny,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    model_dir, saes = saved_tiny
    csv = Path(__file__).parent / "fixtures" / "tasks" / "custom_reviews.csv"
    out = tmp_path / "custom"
    code = main(["run", "--model", model_dir, "--sae", saes, "--task", "custom", "--mode", "all",
                 "--task-option", f"path={csv}", "--task-option", "template=Review: {text}",
                 "--task-option", "label_column=sentiment", "--task-option", "task_name=reviews",
                 "--layers", "1", *_small(out)[:4], "--n-test", "4", *_small(out)[6:]])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    doc = json.loads((out / "results.json").read_text())
    assert doc["task"] == "reviews" and doc["config"]["task_options"]["label_column"] == "sentiment"
    assert doc["baseline"]["n"] == 4


def test_cli_labels_runs_on_a_csv(tmp_path, saved_tiny, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    model_dir, saes = saved_tiny
    csv = Path(__file__).parent / "fixtures" / "tasks" / "custom_reviews.csv"
    code = main(["labels", "--dataset", str(csv), "--label-column", "sentiment", "--model", model_dir,
                 "--sae", saes, "--device", "cpu", "--no-progress", "--out", str(tmp_path / "labels")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "### neg" in printed.out and "### pos" in printed.out
    assert (tmp_path / "labels" / "labels.json").is_file()


def test_cli_controls_on_arithmetic_writes_one_table_with_every_method(tmp_path, saved_tiny,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from corrsteer.studies.controls import DEFAULT_METHODS

    model_dir, saes = saved_tiny
    out = tmp_path / "controls"
    code = main(["controls", "--model", model_dir, "--sae", saes, "--task", "arithmetic", "--layers", "0,2",
                 "--n-train", "8", "--n-test", "6", "--batch-size", "8", "--n-boot", "100", "--device", "cpu",
                 "--draws", "2", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    doc = json.loads((out / "controls.json").read_text())
    drawn = [f"{m} #{d}" for m in ("random", "shuffled") for d in range(2)]
    assert list(doc["rows"]) == ["corrsteer", *drawn, *DEFAULT_METHODS[2:]]
    assert doc["draws"] == 2 and doc["command"].startswith("corrsteer controls --model")
    for name in list(doc["rows"])[1:]:
        assert f" {name} |" in printed.out
    assert "Made by `corrsteer controls --model" in printed.out
    assert main(["controls", "--task", "arithmetic", "--methods", "random,best"]) == 2
    assert "method='best' is not valid" in capsys.readouterr().err


def test_cli_select_with_a_method_needing_state_is_a_clear_error(tmp_path, saved_tiny,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from test_collection import ParityTask

    from corrsteer.tasks import register_task

    register_task("parity", ParityTask, overwrite=True)
    model_dir, saes = saved_tiny
    common = ["--model", model_dir, "--sae", saes, "--task", "parity", "--layers", "1", *_small(tmp_path / "m")]
    assert main(["collect", *common]) == 0
    capsys.readouterr()
    assert main(["select", *common, "--method", "fisher"]) == 2
    assert "controls=True" in capsys.readouterr().err
    assert main(["select", *common, "--method", "mi"]) == 0
    assert "selection (all, mi)" in capsys.readouterr().out


def test_global_flags_may_precede_a_delegated_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["-v", "train-sae", "--help"])
    assert exc.value.code == 0
    assert "corrsteer train-sae" in capsys.readouterr().out


def test_every_command_has_a_working_help(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse formats help with %: one unescaped % in a generated help text breaks --help."""
    commands = [name for name in build_parser()._subparsers._group_actions[0].choices]
    assert {"run", "demo", "controls", "labels", "debias", "train-sae", "info"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0, name
        assert "usage: corrsteer" in capsys.readouterr().out
