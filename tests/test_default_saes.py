"""The default SAEs never depend silently on the environment (issue 14): data found or a clear stop, a quality bar."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corrsteer.errors import CorrsteerError
from corrsteer.sae import defaults
from corrsteer.sae.model import SAE
from corrsteer.storage import datasets as storage_datasets

TINY = dict(d_sae=16, k=2, n_tokens=300, epochs=2, batch_size=64, n_samples=3, sample_tokens=5, n_per_dataset=4,
            max_length=32)


@pytest.fixture
def no_shared_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine where neither $CORRSTEER_DATA nor ../shared/datasets holds the datasets."""
    empty = tmp_path / "nowhere"
    empty.mkdir()
    monkeypatch.setattr(defaults, "candidate_roots", lambda: [empty])
    return empty


def test_missing_datasets_stop_before_any_sampling_and_say_why(tiny_gemma3: Any, tiny_tokenizer: Any,
                                                                 tmp_path: Path, no_shared_data: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sampling(*a: Any, **k: Any) -> None:
        raise AssertionError("the missing datasets must be noticed before the model samples anything")

    monkeypatch.setattr(defaults, "sample_texts", no_sampling)
    with pytest.raises(FileNotFoundError) as info:
        defaults.train_default_saes(tiny_gemma3, tiny_tokenizer, [0], cache_dir=tmp_path, progress=False, **TINY)
    msg = str(info.value)
    assert str(no_shared_data) in msg and "missing: mmlu, bbq, sst2, gsm8k" in msg
    assert "CORRSTEER_DATA" in msg and "dead latents" in msg  # what to set, and why it matters
    assert not any(tmp_path.glob("saes/**/cfg.json"))  # nothing trained, nothing cached


def test_a_partial_datasets_root_names_what_it_lacks(tmp_path: Path, no_shared_data: Path) -> None:
    (tmp_path / "partial" / "sst2").mkdir(parents=True)
    (tmp_path / "partial" / "sst2" / "train.tsv").write_text("1\tgood\n")
    with pytest.raises(FileNotFoundError, match=r"partial \(missing: mmlu, bbq, gsm8k\)"):
        defaults.data_dir(tmp_path / "partial")


def _real_root() -> Path:
    try:
        return defaults.data_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"the shared datasets are not here: {exc}")


def test_the_default_rows_are_the_ones_the_default_saes_are_defined_on() -> None:
    rows, files = defaults.dataset_texts(_real_root(), 400, 0)
    assert defaults._digest(rows) == defaults.DATASET_ROWS_SHA256[(400, 0)]
    assert len(rows) == 1600 and len(files) == 56


def test_an_altered_dataset_copy_is_refused(tmp_path: Path, tiny_gemma3: Any, tiny_tokenizer: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = _real_root()
    copy = tmp_path / "datasets"
    for name in defaults.MIX_SOURCES:
        shutil.copytree(root / name, copy / name)
    sst = copy / "sst2" / "train.tsv"
    sst.write_text(sst.read_text(encoding="utf-8").replace(" the ", " a "), encoding="utf-8")  # another version
    monkeypatch.setattr(defaults, "candidate_roots", lambda: [copy])
    monkeypatch.setattr(defaults, "sample_texts", lambda *a, **k: [])
    settings = defaults.DefaultSettings(n_samples=0)  # the default rows: 400 per dataset, seed 0
    with pytest.raises(CorrsteerError, match="not the ones the default SAEs are defined on"):
        defaults.default_texts(tiny_gemma3, tiny_tokenizer, settings, progress=False)
    shutil.copy(root / "SHA256SUMS", copy / "SHA256SUMS")  # with the checksums, the file itself is named
    storage_datasets._VERIFIED.clear()
    with pytest.raises(CorrsteerError, match=r"train.tsv does not match .*SHA256SUMS"):
        defaults.default_texts(tiny_gemma3, tiny_tokenizer, settings, progress=False)


def test_a_degenerate_default_sae_is_an_error_trained_or_cached(tiny_gemma3: Any, tiny_tokenizer: Any,
                                                                 tmp_path: Path) -> None:
    strict = {"min_explained_variance": 0.999, "max_dead_fraction": 0.0}
    with pytest.raises(CorrsteerError, match="fails the default SAEs' quality bar") as info:
        defaults.train_default_saes(tiny_gemma3, tiny_tokenizer, [1], cache_dir=tmp_path, progress=False,
                                    quality=strict, **TINY)
    assert not any(tmp_path.glob("saes/*/*/layer_*/cfg.json"))  # a failing SAE is never cached ...
    (kept,) = tmp_path.glob("saes/*/refused/*/layer_1")  # ... nor thrown away: kept outside the set
    assert str(kept) in str(info.value) and "--sae" in str(info.value)
    refused = SAE.load(kept)  # usable as the message says, with the metrics that refused it
    assert refused.d_sae == TINY["d_sae"] and "dead_fraction" in refused.meta["metrics"]
    assert not defaults.cached_sets(tmp_path)  # and not listed as a set
    saes = defaults.train_default_saes(tiny_gemma3, tiny_tokenizer, [1], cache_dir=tmp_path, progress=False,
                                       quality=None, **TINY)
    (cfg_path,) = tmp_path.glob("saes/*/*/layer_1/cfg.json")
    cfg = json.loads(cfg_path.read_text())
    cfg["corrsteer"]["metrics"].update(explained_variance=0.48, dead_fraction=0.53)  # a set like the data-less one
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CorrsteerError, match=r"explained variance 0.480 .* dead latents 53.0%"):
        defaults.train_default_saes(tiny_gemma3, tiny_tokenizer, [1], cache_dir=tmp_path, progress=False, **TINY)
    texts = saes[1].meta["texts"]
    assert texts["model_samples"] == 3 and len(texts["model_samples_sha256"]) == 64
    assert texts["dataset_rows"] == 16 and "sst2/train.tsv" in texts["dataset_files"]


def test_the_cache_key_is_the_one_of_before_the_datasets_became_required(tiny_gemma3: Any, tmp_path: Path) -> None:
    """Existing caches keep their place: the key still says datasets=True for the default mix."""
    import hashlib
    from dataclasses import asdict

    settings = defaults.DefaultSettings()
    key = dict(asdict(settings), trainer=defaults.TRAINER_VERSION, datasets=True)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    assert defaults.cache_root(tiny_gemma3, settings, tmp_path).name == digest == "af763340d92a09e7"
    assert np.isfinite(defaults.QUALITY["min_explained_variance"])


def test_the_larger_sets_differ_in_the_latent_count_only(tiny_gemma3: Any, tmp_path: Path) -> None:
    """default-8k against default-16k is a controlled comparison (README, "Our SAEs"), and
    defining the 8k set did not move the 16k set's cache."""
    from dataclasses import asdict

    small, large = asdict(defaults.SETS["default-8k"]), asdict(defaults.SETS["default-16k"])
    assert {k for k in small if small[k] != large[k]} == {"d_sae"}
    assert (small["d_sae"], large["d_sae"], large["n_tokens"]) == (8192, 16384, 1_000_000)
    assert defaults.cache_root(tiny_gemma3, defaults.SETS["default-16k"], tmp_path).name == "e3c363be6ec33b6c"
    # scripts/results.sh `width` names default-8k's cache folder by this hash
    eight = defaults.cache_root(tiny_gemma3, defaults.SETS["default-8k"], tmp_path).name
    results_sh = (Path(__file__).resolve().parents[1] / "scripts" / "results.sh").read_text()
    assert eight == "261c1b0706a29e80" and f"/saes/gemma-3-270m/{eight}\n" in results_sh
