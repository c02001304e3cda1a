"""llama.cpp control vectors: the GGUF format, the site -> block mapping, export and eval from the CLI.

The comparison against llama.cpp itself (llama-cpp-python) is tests/test_llama_cpp.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from corrsteer.cli import main
from corrsteer.method.features import Selection
from corrsteer.storage.control_vector import ARCH, blocks_from_sites, read_control_vector, write_control_vector

gguf = pytest.importorskip("gguf", reason="gguf is a dependency of corrsteer")


def _selection(sites: dict[int, str], d: int = 32, seed: int = 0, scale: float = 1.0) -> Selection:
    rng = np.random.default_rng(seed)
    directions = {l: rng.standard_normal((2, d)).astype(np.float32) for l in sites}  # (n_terms, d_model)
    coefficients = {l: rng.uniform(0.5, 3.0, 2) * np.array([1.0, -1.0]) for l in sites}
    return Selection(mode="all", features=[], directions=directions, coefficients=coefficients, sites=dict(sites),
                     scale=scale, meta={"model": "gemma-3-270m"})


def _raw(path: Path, tensors: dict[str, np.ndarray], arch: str = ARCH, hint: str | None = "gemma3") -> Path:
    """A GGUF written directly with the gguf package (as repeng does: uint32 layer_count)."""
    w = gguf.GGUFWriter(str(path), arch)
    if hint is not None:
        w.add_string(f"{arch}.model_hint", hint)
        w.add_uint32(f"{arch}.layer_count", len(tensors))
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_export_writes_direction_n_f32_1d_with_llama_cpp_metadata(tmp_path) -> None:
    sel = _selection({2: "resid_post", 5: "resid_post"}, scale=1.5)
    path = sel.to_gguf(tmp_path / "steer.gguf", "gemma3")
    reader = gguf.GGUFReader(str(path))
    field = reader.fields
    assert bytes(field["general.architecture"].parts[-1]).decode() == "controlvector"
    assert bytes(field["controlvector.model_hint"].parts[-1]).decode() == "gemma3"
    assert int(field["controlvector.layer_count"].parts[-1][0]) == 2
    assert [(t.name, t.tensor_type.name, [int(s) for s in t.shape]) for t in reader.tensors] == \
        [("direction.2", "F32", [32]), ("direction.5", "F32", [32])]
    want = sel.vectors()  # at the selection's scale
    got = read_control_vector(path)
    assert got.model_hint == "gemma3" and got.layer_count == 2 and got.d_model == 32
    for n in (2, 5):
        np.testing.assert_array_equal(got.directions[n], want[n])


def test_export_at_another_scale_multiplies_the_vectors(tmp_path) -> None:
    sel = _selection({3: "resid_post"})
    got = read_control_vector(sel.to_gguf(tmp_path / "s.gguf", "llama", scale=-2.0)).directions[3]
    np.testing.assert_allclose(got, -2.0 * sel.vectors(1.0)[3], rtol=1e-6)


def test_resid_pre_of_layer_l_is_the_output_of_block_l_minus_1_and_adds_up() -> None:
    a, b = np.ones(4, np.float32), np.arange(4, dtype=np.float32)
    assert list(blocks_from_sites([(5, a, "resid_pre")])) == [4]
    both = blocks_from_sites([(4, a, "resid_post"), (5, b, "resid_pre"), (7, b, "resid_post")])
    assert sorted(both) == [4, 7]
    np.testing.assert_array_equal(both[4], a + b)


@pytest.mark.parametrize("layer, site, message", [
    (0, "resid_post", "never steers block 0"),
    (1, "resid_pre", "never steers block 0"),
    (0, "resid_pre", "steers the embeddings"),
    (3, "mlp_out", "site 'mlp_out'"),
    (3, "attn_out", "only add to the residual stream between blocks"),
])
def test_what_llama_cpp_cannot_steer_is_refused_with_the_reason(layer: int, site: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        blocks_from_sites([(layer, np.ones(4, np.float32), site)])


def test_from_gguf_reads_each_direction_as_layer_n_resid_post_at_scale_1(tmp_path) -> None:
    sel = _selection({1: "resid_post", 3: "resid_pre"})
    back = Selection.from_gguf(sel.to_gguf(tmp_path / "s.gguf", "llama"), d_model=32)
    assert back.layers == [1, 2] and back.sites == {1: "resid_post", 2: "resid_post"} and back.scale == 1.0
    assert back.method == "control-vector" and back.features == [] and back.meta["model_hint"] == "llama"
    want = sel.vectors()
    np.testing.assert_allclose(back.vectors()[1], want[1], rtol=1e-6)
    np.testing.assert_allclose(back.vectors()[2], want[3], rtol=1e-6)  # resid_pre 3 = output of block 2


def test_a_vector_read_back_steers_the_model_exactly_as_the_selection(tmp_path, tiny_llama, tiny_tokenizer) -> None:
    sel = _selection({1: "resid_post", 2: "resid_pre"})
    back = Selection.from_gguf(sel.to_gguf(tmp_path / "s.gguf", "llama"))
    enc = tiny_tokenizer(["2+2=", "hello there"], return_tensors="pt", padding=True)
    with torch.no_grad():
        base = tiny_llama(**enc).logits
        with sel.apply(tiny_llama, positions="all"):
            a = tiny_llama(**enc).logits
        with back.apply(tiny_llama, positions="all"):
            b = tiny_llama(**enc).logits
    assert (a - base).abs().max() > 1e-2  # the vectors do something
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_repeng_style_file_with_a_uint32_layer_count_reads(tmp_path) -> None:
    path = _raw(tmp_path / "r.gguf", {f"direction.{n}": np.full(8, n, np.float32) for n in (1, 2, 3)}, hint="mistral")
    cv = read_control_vector(path, d_model=8)
    assert sorted(cv.directions) == [1, 2, 3] and cv.layer_count == 3 and cv.model_hint == "mistral"


@pytest.mark.parametrize("tensors, message", [
    ({"direction.1": np.ones(8, np.float32), "bias.1": np.ones(8, np.float32)}, "not named direction.N"),
    ({"direction.x": np.ones(8, np.float32)}, "not named direction.N"),
    ({"direction.0": np.ones(8, np.float32)}, "direction.0 steers block 0"),
    ({"direction.1": np.ones(8, np.float16)}, "is F16; direction tensors must be F32"),
    ({"direction.1": np.ones((2, 8), np.float32)}, "must be 1-D"),
    ({"direction.1": np.ones(8, np.float32), "direction.2": np.ones(6, np.float32)}, "different widths"),
    ({"direction.1": np.array([1.0, np.nan], np.float32)}, "NaN or Inf"),
    ({}, "holds no direction tensor"),
])
def test_bad_control_vector_files_are_refused_with_a_clear_message(tmp_path, tensors, message: str) -> None:
    path = _raw(tmp_path / "bad.gguf", tensors)
    with pytest.raises(ValueError, match=message):
        read_control_vector(path)


def test_a_model_file_or_garbage_is_not_a_control_vector(tmp_path) -> None:
    model = _raw(tmp_path / "model.gguf", {"token_embd.weight": np.ones((4, 8), np.float32)}, arch="gemma3")
    with pytest.raises(ValueError, match="general.architecture is 'gemma3'.*model file"):
        read_control_vector(model)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        read_control_vector(junk)
    with pytest.raises(FileNotFoundError):
        read_control_vector(tmp_path / "missing.gguf")


def test_a_width_that_does_not_match_the_model_is_refused(tmp_path) -> None:
    path = _raw(tmp_path / "w.gguf", {"direction.1": np.ones(16, np.float32)})
    with pytest.raises(ValueError, match="width 16 but the model has d_model=32"):
        Selection.from_gguf(path, d_model=32)


def test_a_2d_tensor_whose_extra_dims_are_1_reads_as_llama_cpp_reads_it(tmp_path) -> None:
    # ggml_n_dims ignores trailing dimensions of size 1: llama.cpp loads a (1, n_embd) tensor as 1-D
    path = _raw(tmp_path / "one.gguf", {"direction.2": np.arange(8, dtype=np.float32)[None, :]})
    np.testing.assert_array_equal(read_control_vector(path).directions[2], np.arange(8))


# ---------------------------------------------------------------------------------- command line

def test_cli_export_writes_the_file_and_says_llama_cpp_steers_every_position(tmp_path, capsys) -> None:
    sel_dir = _selection({3: "resid_post", 7: "resid_pre"}, scale=2.0).save(tmp_path / "sel")
    assert main(["export", "--selection", str(sel_dir), "--format", "gguf", "-o", str(tmp_path / "s.gguf")]) == 0
    out = capsys.readouterr().out
    assert "model hint gemma3" in out and "scale 2" in out and "EVERY position" in out
    assert "layer 7 (resid_pre) -> direction.6" in out and "--positions all" in out
    assert sorted(read_control_vector(tmp_path / "s.gguf").directions) == [3, 6]


def test_cli_export_refuses_block_0_and_an_unknown_model_without_a_hint(tmp_path, capsys) -> None:
    sel_dir = _selection({0: "resid_post"}).save(tmp_path / "sel0")
    assert main(["export", "--selection", str(sel_dir), "-o", str(tmp_path / "s.gguf")]) == 2
    assert "never steers block 0" in capsys.readouterr().err
    sel = _selection({2: "resid_post"})
    sel.meta["model"] = "my-model-0123"
    sel.save(tmp_path / "sel2")
    assert main(["export", "--selection", str(tmp_path / "sel2"), "-o", str(tmp_path / "s.gguf")]) == 2
    assert "pass --model-hint" in capsys.readouterr().err
    assert main(["export", "--selection", str(tmp_path / "sel2"), "-o", str(tmp_path / "s.gguf"),
                 "--model-hint", "llama"]) == 0
    assert not (tmp_path / "sel0" / "s.gguf").exists()


def test_cli_eval_a_gguf_vector_at_every_position(tmp_path, tiny_llama, tiny_tokenizer, capsys) -> None:
    model_dir = tmp_path / "model"
    tiny_llama.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    vec = _selection({1: "resid_post", 2: "resid_post"}, scale=3.0).to_gguf(tmp_path / "s.gguf", "llama")
    out = tmp_path / "ev"
    common = ["--model", str(model_dir), "--task", "arithmetic", "--n-test", "8", "--batch-size", "8",
              "--n-boot", "100", "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(["eval", *common, "--vector", str(vec), "--positions", "all"]) == 0
    printed = capsys.readouterr().out
    assert "steered at every position" in printed and "llama.cpp control vector" in printed
    doc = json.loads((out / "results.json").read_text())
    assert doc["positions"] == "all" and doc["method"] == "control-vector" and doc["steered_layers"] == [1, 2]
    wide = _raw(tmp_path / "wide.gguf", {"direction.1": np.ones(64, np.float32)})
    assert main(["eval", *common, "--vector", str(wide)]) == 2
    assert "width 64 but the model has d_model=32" in capsys.readouterr().err
    assert main(["eval", *common, "--vector", str(vec), "--scale", "auto"]) == 2  # calibration is select's
    assert "--scale auto" in capsys.readouterr().err


@pytest.mark.model
@pytest.mark.slow  # embedded_gguf checks the sha256 of each assembled file: a minute on a busy 2-core machine
def test_embedded_models_name_their_gguf_architecture() -> None:
    from corrsteer.models.embedded import EMBEDDED, embedded_gguf

    for name, spec in EMBEDDED.items():
        try:
            path = embedded_gguf(name)
        except Exception as exc:  # noqa: BLE001 - the embedded packages are optional
            pytest.skip(f"embedded model {name} not installed: {exc}")
        field = gguf.GGUFReader(str(path)).fields["general.architecture"]
        assert bytes(field.parts[field.data[0]]).decode() == spec.arch, name
