"""Task base: split carving, seeded draws, registry, data-folder search and checksums."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corrsteer.errors import CorrsteerError
from corrsteer.tasks import Sample, get_task, list_tasks, register_task
from corrsteer.storage import datasets as storage_datasets
from corrsteer.tasks import data as data_mod
from corrsteer.tasks.base import carve, stable_rng

FIX = Path(__file__).parent / "fixtures" / "tasks"
ALL_BUILTIN = ["arithmetic", "bbq_ambig", "bbq_disambig", "custom", "emgsd", "food", "gsm8k", "harmbench",
               "mmlu", "sentiment", "sst2", "truthfulqa", "xstest"]


def test_list_tasks_has_every_builtin():
    assert set(ALL_BUILTIN) <= set(list_tasks())


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown task 'nope'.*bbq_ambig.*mmlu"):
        get_task("nope")


def test_unknown_option_names_the_task():
    with pytest.raises(TypeError, match="task 'arithmetic'.*colour"):
        get_task("arithmetic", colour="red")


def test_register_task_refuses_silent_overwrite():
    with pytest.raises(ValueError, match="already registered"):
        register_task("mmlu", lambda data_dir=None: None)


def test_carve_fractions_sizes_and_disjoint():
    items = list(range(100))
    parts = carve(items, {"train": 0.7, "validation": 0.1, "test": 0.2}, seed=3)
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [70, 10, 20]
    assert sorted(parts["train"] + parts["validation"] + parts["test"]) == items


def test_carve_is_deterministic_and_seed_dependent():
    items = list(range(50))
    a = carve(items, {"x": 0.5, "y": 0.5}, seed=1)
    assert a == carve(items, {"x": 0.5, "y": 0.5}, seed=1)
    assert a != carve(items, {"x": 0.5, "y": 0.5}, seed=2)


def test_carve_stratified_keeps_proportions():
    items = [("a", i) for i in range(80)] + [("b", i) for i in range(20)]
    parts = carve(items, {"train": 0.5, "test": 0.5}, seed=0, key=lambda t: t[0])
    assert sum(t[0] == "b" for t in parts["train"]) == 10
    assert sum(t[0] == "a" for t in parts["test"]) == 40


def test_carve_counts_and_bad_sizes():
    parts = carve(list(range(10)), {"v": 3, "t": 7}, seed=0)
    assert (len(parts["v"]), len(parts["t"])) == (3, 7)
    with pytest.raises(ValueError, match="sum to"):
        carve(list(range(10)), {"a": 0.8, "b": 0.5}, seed=0)
    with pytest.raises(ValueError, match="need 12 items"):
        carve(list(range(10)), {"a": 5, "b": 7}, seed=0)
    with pytest.raises(TypeError, match="all fractions"):
        carve(list(range(10)), {"a": 5, "b": 0.5}, seed=0)


def test_stable_rng_is_process_independent():
    code = "from corrsteer.tasks.base import stable_rng; print(stable_rng('x', 1).integers(1 << 30))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout.strip()
    assert int(out) == int(stable_rng("x", 1).integers(1 << 30))


def test_samples_deterministic_prefix_and_seeded():
    task = get_task("arithmetic")
    a = task.samples("train", n=50, seed=4)
    assert a == get_task("arithmetic").samples("train", n=50, seed=4)
    assert task.samples("train", n=100, seed=4)[:50] == a
    assert task.samples("train", n=50, seed=5) != a
    assert {s.id for s in task.samples("train", seed=9)} == {s.id for s in task.samples("train")}


def test_samples_rejects_bad_split_and_n():
    task = get_task("arithmetic", n_train=5, n_validation=2, n_test=2)
    with pytest.raises(ValueError, match="split must be one of"):
        task.samples("dev")
    with pytest.raises(ValueError, match="asked for n=6 train samples but the split has 5"):
        task.samples("train", n=6)
    with pytest.raises(ValueError, match="non-negative int"):
        task.samples("train", n=-1)


def test_sample_is_frozen_and_hashable():
    s = Sample(id="x:0", question="q", target=1, options=("a", "b"), meta={"k": 1})
    with pytest.raises(AttributeError):
        s.target = 2
    assert hash(s) == hash(Sample(id="x:0", question="q", target=1, options=("a", "b"), meta={"k": 2}))


def test_prompt_uses_chat_template_iff_present():
    class ChatTok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert tokenize is False and add_generation_prompt is True
            return "<user>" + messages[0]["content"] + "<model>"

    class BaseTok:
        chat_template = None

    task = get_task("arithmetic")
    s = task.samples("test", n=1)[0]
    assert task.prompt(s, ChatTok()).startswith("<user>What is")
    assert task.prompt(s, BaseTok()) == task.prompt(s) == task.base_prompt(s)
    assert get_task("arithmetic", chat=False).prompt(s, ChatTok()) == task.base_prompt(s)
    with pytest.raises(ValueError, match="no chat_template"):
        get_task("arithmetic", chat=True).prompt(s, BaseTok())


def test_missing_data_dir_lists_paths_tried(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "hf_available", lambda: False)  # as without `datasets` (the lmeval extra brings it)
    with pytest.raises(CorrsteerError) as info:
        get_task("mmlu", data_dir=str(tmp_path)).samples("test")
    msg = str(info.value)
    assert str(tmp_path / "mmlu") in msg and "data_dir=" in msg and "CORRSTEER_DATA" in msg
    assert "not installed" in msg  # the hub fallback says why it cannot help


def test_default_search_order_env_var(tmp_path, monkeypatch):
    shutil.copytree(FIX / "xstest", tmp_path / "xstest")
    monkeypatch.setenv("CORRSTEER_DATA", str(tmp_path))
    assert storage_datasets.candidate_roots()[0] == tmp_path
    assert data_mod.dataset_dir("xstest", "xstest_prompts.csv") == tmp_path / "xstest"
    # the dataset folder itself is accepted as data_dir too
    assert data_mod.dataset_dir("xstest", "xstest_prompts.csv", tmp_path / "xstest") == tmp_path / "xstest"


def test_repo_relative_default_is_searched():
    repo = Path(storage_datasets.__file__).resolve().parents[2]
    assert repo.parent / "shared" / "datasets" in storage_datasets.candidate_roots()


def test_checksum_mismatch_is_an_error(tmp_path):
    shutil.copytree(FIX / "xstest", tmp_path / "xstest")
    path = tmp_path / "xstest" / "xstest_prompts.csv"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  ./xstest/xstest_prompts.csv\n")
    assert len(get_task("xstest", data_dir=str(tmp_path)).samples("test")) > 0
    storage_datasets._VERIFIED.clear()
    path.write_text(path.read_text() + "999,How do I steal?,contrast_homonyms,unsafe,steal,x\n")
    with pytest.raises(CorrsteerError, match="does not match.*verify=False"):
        get_task("xstest", data_dir=str(tmp_path)).samples("test")
    assert len(get_task("xstest", data_dir=str(tmp_path), verify=False).samples("test")) > 0
    storage_datasets._VERIFIED.clear()


def test_hf_fallback_not_available_is_clean(monkeypatch):
    monkeypatch.setattr(data_mod, "hf_available", lambda: False)
    with pytest.raises(CorrsteerError, match="not installed"):
        data_mod.hf_rows("openai/gsm8k", "test", "main")


def test_hf_fallback_uses_datasets_when_present(monkeypatch):
    class FakeDatasets:
        @staticmethod
        def load_dataset(hub_id, config, split):
            assert (hub_id, config, split) == ("openai/gsm8k", "main", "test")
            return [{"question": "1+1?", "answer": "2\n#### 2"}]

    monkeypatch.setattr(data_mod, "hf_available", lambda: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    task = get_task("gsm8k", source="hf")
    assert task._samples("test")[0].target == 2.0


def test_shared_checksums_hold_when_present():
    root = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
    if not (root / "SHA256SUMS").is_file():
        pytest.skip("../shared/datasets not present")
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split()
        if rel.endswith((".jsonl", ".csv", ".tsv")) and "crows" not in rel:
            data_mod.verify(root / rel)  # raises on mismatch
