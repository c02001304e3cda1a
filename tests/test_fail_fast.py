"""Issue #12 §4: everything checkable is checked before a model loads; one line per error; exit codes; cleanup.

The command-line tests replace the model loader with one that fails the test, so an error that
comes only after the model would load shows as a failure here, not as a slow pass.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import pytest

from corrsteer.cli import main
from corrsteer.cli.common import EXIT_INTERRUPTED, EXIT_LIBRARY, EXIT_USER, report_errors
from corrsteer.errors import CorrsteerError


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: what these tests check must come first."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the error was found")

    import corrsteer.pipeline

    monkeypatch.setattr(corrsteer.pipeline, "load_model", refuse)


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    # log lines and third-party progress bars (transformers' "Loading weights") are not errors
    lines = [l for l in err.splitlines() if not l.startswith(("WARNING", "INFO")) and "it/s]" not in l]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0], err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def _reviews(tmp_path: Path, n: int = 20) -> Path:
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "".join(f"review {i},{'pos' if i % 2 else 'neg'}\n" for i in range(n)))
    return path


def _custom(path: Path, *extra: str) -> list[str]:
    return ["--task", "custom", "--task-option", f"path={path}", *extra]


# ------------------------------------------------------------------- checked before the model loads


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("command", ["run", "collect", "controls"])
def test_unknown_task_exits_2_before_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               command: str) -> None:
    assert main([command, "--task", "nope", "--out", str(tmp_path / "o")]) == EXIT_USER
    _one_line_error(capsys, "unknown task 'nope'")


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("option, split", [("--n-train", "train"), ("--n-test", "test")])
def test_more_samples_than_the_split_holds_exits_2_before_the_model(tmp_path: Path, option: str, split: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", *_custom(_reviews(tmp_path)), "--n-train", "4", "--n-test", "2", option, "500",
            "--out", str(tmp_path / "o")]
    assert main(argv) == EXIT_USER
    _one_line_error(capsys, f"{option} 500 is more than the {split} split", "pass " + option)


@pytest.mark.usefixtures("no_model")
def test_n_val_is_checked_for_pruned_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", *_custom(_reviews(tmp_path)), "--n-train", "4", "--n-test", "2", "--n-val", "50",
            "--mode", "pruned", "--out", str(tmp_path / "o")]
    assert main(argv) == EXIT_USER
    _one_line_error(capsys, "--n-val 50 is more than the validation split")


@pytest.mark.usefixtures("no_model")
def test_missing_data_dir_exits_2_before_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "--task", "mmlu", "--data-dir", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o")]) == EXIT_USER
    _one_line_error(capsys, "--data-dir", "does not exist")


@pytest.mark.usefixtures("no_model")
def test_select_without_a_collection_exits_2_before_the_model_or_any_sae(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # --sae default: before, this trained the default SAEs for minutes before noticing
    assert main(["select", "--task", "arithmetic", "--out", str(tmp_path / "empty")]) == EXIT_USER
    _one_line_error(capsys, "no collection in", "corrsteer collect")


@pytest.mark.usefixtures("no_model")
def test_eval_without_a_selection_exits_2_before_the_model(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--task", "arithmetic", "--out", str(tmp_path / "empty")]) == EXIT_USER
    _one_line_error(capsys, "lacks selection.json")


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("where", ["out", "parent"])
def test_output_path_that_is_a_file_exits_2_before_the_model(tmp_path: Path, where: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    out = blocker if where == "out" else blocker / "run"
    assert main(["collect", "--task", "arithmetic", "--n-train", "4", "--out", str(out)]) == EXIT_USER
    _one_line_error(capsys, str(blocker), "is a file")


@pytest.mark.usefixtures("no_model")
def test_unwritable_output_folder_exits_2_before_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import corrsteer.pipeline

    def read_only(*args: Any, **kwargs: Any) -> None:  # root ignores chmod, so say it the file system's way
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "o"))

    monkeypatch.setattr(corrsteer.pipeline.tempfile, "TemporaryFile", read_only)
    assert main(["collect", "--task", "arithmetic", "--n-train", "4", "--out", str(tmp_path / "o")]) == EXIT_USER
    _one_line_error(capsys, "cannot write in the output folder", "Read-only file system")


# ------------------------------------------------------------------- data files: one line each


BAD_FILES: dict[str, tuple[str, bytes, tuple[str, ...]]] = {
    "non-UTF-8 CSV": ("d.csv", "text,label\ncaf\u00e9,pos\nx,neg\n".encode("latin-1"), ("d.csv", "not UTF-8")),
    "bad JSON line": ("d.jsonl", b'{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg"}\n{"text": oops}\n',
                      ("d.jsonl:3", "not valid JSON")),
    "JSON that is not a list": ("d.json", b'{"text": "a"}', ("d.json", "list of objects")),
    "broken .json": ("d.json", b'[{"text": "a", "label": ', ("d.json:1", "not valid JSON")),
    "over-long CSV field": ("d.csv", b"text,label\n" + b"x" * 200_000 + b",pos\nb,neg\n",
                            ("d.csv:2", "field larger than field limit")),
    "short CSV row": ("d.csv", b"text,label\na,pos\nb\n", ("d.csv:3", "no value for column(s) ['label']")),
    "null label": ("d.jsonl", b'{"text": "a", "label": "pos"}\n{"text": "b", "label": null}\n',
                   ("d.jsonl:2", "column 'label' is null")),
    "missing column": ("d.jsonl", b'{"text": "a", "label": "pos"}\n{"label": "neg"}\n',
                       ("d.jsonl:2", "missing key(s) ['text']")),
}


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_data_file_is_one_line_naming_the_file(tmp_path: Path, case: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    name, data, needles = BAD_FILES[case]
    (tmp_path / name).write_bytes(data)
    assert main(["collect", *_custom(tmp_path / name), "--n-train", "1", "--out", str(tmp_path / "o")]) == EXIT_USER
    _one_line_error(capsys, *needles)


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("template, needle", [("Review: {}", "positional field {}"), ("x {0}", "positional field {0}"),
                                              ("{text", "malformed"), ("text}", "malformed"),
                                              ("{text.upper}", "attribute or index"), ("plain", "reads no column")])
def test_bad_template_is_one_line_naming_it(tmp_path: Path, template: str, needle: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["collect", *_custom(_reviews(tmp_path), "--task-option", f"template={template}"), "--n-train", "1",
            "--out", str(tmp_path / "o")]
    assert main(argv) == EXIT_USER
    _one_line_error(capsys, repr(template), needle)


@pytest.mark.usefixtures("no_model")
def test_negative_max_new_tokens_task_option_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["collect", *_custom(_reviews(tmp_path), "--task-option", "max_new_tokens=-5"), "--out",
            str(tmp_path / "o")]
    assert main(argv) == EXIT_USER
    _one_line_error(capsys, "max_new_tokens=-5 must be a positive integer")


# ------------------------------------------------------------------- the exit-code policy


@pytest.mark.parametrize("exc, code, needle", [
    (ValueError("bad value"), EXIT_USER, "error: bad value"),
    (TypeError("bad type"), EXIT_USER, "error: bad type"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y"), EXIT_USER, "/x/y: No such file"),
    (OSError(errno.ENOSPC, "No space left on device", "/x/.c.tmp"), EXIT_USER, "free some space"),
    (PermissionError(errno.EACCES, "Permission denied", "/x"), EXIT_USER, "check the permissions"),
    (OSError(errno.EROFS, "Read-only file system", "/x"), EXIT_USER, "read-only"),
    (CorrsteerError("corrupt checkpoint"), EXIT_LIBRARY, "error: corrupt checkpoint"),
    (KeyError("oops"), EXIT_LIBRARY, "internal error: KeyError"),
    (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted; the last checkpoint is intact"),
])
def test_exit_code_policy_is_applied_in_one_place(exc: BaseException, code: int, needle: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> None:
        raise exc

    assert report_errors(boom, debug=False, prog="corrsteer x") == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("corrsteer x: ") and needle in err, err


def test_debug_shows_the_traceback_of_an_internal_error() -> None:
    def boom() -> None:
        raise KeyError("oops")

    with pytest.raises(KeyError):
        report_errors(boom, debug=True)


# ------------------------------------------------------------------- disk full, temp files, resume


@pytest.fixture
def tiny_run(tmp_path: Path, tiny_llama: Any, tiny_tokenizer: Any, make_tiny_sae: Any) -> list[str]:
    """Command-line arguments of a tiny collection (saved model, one SAE, the parity task)."""
    from test_collection import ParityTask

    from corrsteer.tasks import register_task

    register_task("parity", ParityTask, overwrite=True)
    tiny_llama.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    sae = make_tiny_sae(32, 48, "relu", seed=31, layer=1).save(tmp_path / "sae1")
    return ["--model", str(tmp_path / "model"), "--sae", str(sae), "--task", "parity", "--n-train", "12",
            "--batch-size", "4", "--checkpoint-every", "4", "--device", "cpu", "--no-progress",
            "--out", str(tmp_path / "run")]


def test_disk_full_mid_collection_is_one_line_and_keeps_the_last_checkpoint(
        tmp_path: Path, tiny_run: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from corrsteer.method import checkpoints, collection
    from corrsteer.storage import atomic

    real = atomic.write_bytes
    calls = []

    def write_bytes(path: Any, data: bytes) -> Path:  # checkpoints are written whole, by atomic.write_bytes
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: half written, then the disk is full
            with atomic.atomic_open(path, "wb") as fh:
                fh.write(data[:100])
                raise OSError(errno.ENOSPC, "No space left on device", fh.name)
        return real(path, data)

    monkeypatch.setattr(checkpoints.atomic, "write_bytes", write_bytes)
    assert main(["collect", *tiny_run]) == EXIT_USER
    _one_line_error(capsys, "No space left on device", "free some space")
    folder = tmp_path / "run" / "collection"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.npz"]  # no temp file left
    col, offset = collection.load_checkpoint(folder / "checkpoint.npz")
    assert offset == 4 and col.n == 4 and not col.complete
    monkeypatch.setattr(checkpoints.atomic, "write_bytes", real)
    assert main(["collect", *tiny_run, "--resume"]) == 0
    assert collection.load_collection(tmp_path / "run").n == 12


def test_stale_checkpoint_temps_are_removed_on_the_next_start(tmp_path: Path, tiny_run: list[str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "run" / "collection"
    folder.mkdir(parents=True)
    stale = [folder / ".checkpoint.npz.0a1b2c3d.tmp", folder / ".records.jsonl.deadbeef.tmp"]
    kept = [folder / ".checkpoint.npz.notes.tmp", folder / "mine.tmp"]
    for p in stale + kept:
        p.write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.WARNING):
        assert main(["collect", *tiny_run]) == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert "temp file(s) of an interrupted checkpoint write" in caplog.text
    assert all(str(p) in caplog.text for p in stale) and not any(str(p) in caplog.text for p in kept)


def test_resume_on_an_empty_folder_says_it_starts_fresh(tiny_run: list[str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert main(["collect", *tiny_run, "--resume"]) == 0
    assert "--resume: no collection checkpoint at" in caplog.text and "starting a fresh collection" in caplog.text


# ------------------------------------------------------------------- long work is announced, --no-train


def test_default_saes_announce_training_and_no_train_refuses(tmp_path: Path, tiny_llama: Any, tiny_tokenizer: Any,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from corrsteer.sae import defaults

    with pytest.raises(ValueError, match=r"no cached default SAE for layers \[1\].*corrsteer train-sae --layers 1"):
        defaults.train_default_saes(tiny_llama, tiny_tokenizer, [1], cache_dir=tmp_path, train=False)

    def stop(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("training started")

    monkeypatch.setattr(defaults, "default_texts", stop)
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="training started"):
        defaults.train_default_saes(tiny_llama, tiny_tokenizer, [1], cache_dir=tmp_path)
    assert "no cached default SAE for layers [1]" in caplog.text and "a minute per layer" in caplog.text
    assert "--no-train" in caplog.text


def test_no_train_on_the_command_line_refuses_instead_of_training(tmp_path: Path, tiny_run: list[str],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    argv = list(tiny_run)
    argv[argv.index("--sae") + 1] = "default"
    assert main(["collect", *argv, "--layers", "1", "--no-train"]) == EXIT_USER
    _one_line_error(capsys, "no cached default SAE for layers [1]", "--no-train")
    assert not (tmp_path / "cache" / "saes").exists() or not any((tmp_path / "cache" / "saes").rglob("cfg.json"))


@pytest.mark.parametrize("seed, options, warned", [(1, {}, True), (0, {}, False), (1, {"split_seed": 1}, False)])
def test_a_seed_that_only_reorders_the_whole_split_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            seed: int, options: dict, warned: bool) -> None:
    """XSTest's lesson: when --n-test is the whole test split, --seed reorders the same samples."""
    from corrsteer.config import RunConfig
    from corrsteer.pipeline import preflight
    from corrsteer.tasks import get_task

    path = _reviews(tmp_path)
    n_test = len(get_task("custom", path=str(path), **options).splits()["test"])
    cfg = RunConfig(task="custom", task_options={"path": str(path), **options}, n_train=2, n_test=n_test,
                    seed=seed, out=str(tmp_path / "o"))
    with caplog.at_level(logging.WARNING, logger="corrsteer.pipeline"):
        preflight(cfg, "run")
    said = [r.getMessage() for r in caplog.records if "only reorders" in r.getMessage()]
    assert bool(said) == warned, caplog.text
    if warned:
        assert f"--n-test {n_test}" in said[0] and "--task-option split_seed=1" in said[0]
