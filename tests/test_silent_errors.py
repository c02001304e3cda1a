"""Issue #12 §2: inputs that used to give a silently wrong answer are refused, naming the file and field.

Each test goes through the public API (``corrsteer.SAE``, ``SAE.load``, ``get_task``), so the same
file runs against older checkouts: every test here failed on commit b9a9b38. Covered elsewhere:
uint64 sequence indices (``test_core_seq_indices.py``), forged accumulator states and a racing
writer (``test_core_state.py``).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import corrsteer
from corrsteer.errors import CorrsteerError
from corrsteer.tasks import get_task

D_IN, D_SAE = 4, 6


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W_enc": rng.normal(size=(D_IN, D_SAE)).astype(np.float32),
            "W_dec": rng.normal(size=(D_SAE, D_IN)).astype(np.float32),
            "b_enc": rng.normal(size=D_SAE).astype(np.float32),
            "b_dec": rng.normal(size=D_IN).astype(np.float32)}


CFG = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "apply_b_dec_to_input": False,
       "hook_name": "blocks.3.hook_resid_post", "normalize_activations": "none"}


def _saelens(root: Path, cfg: dict, body: bytes | None = None) -> Path:
    from safetensors.numpy import save

    root.mkdir(parents=True, exist_ok=True)
    (root / "cfg.json").write_text(json.dumps(cfg))
    (root / "sae_weights.safetensors").write_bytes(body if body is not None else save(_weights()))
    return root


# ------------------------------------------------------------------------------------ safetensors


SHAPES = {"W_enc": [D_IN, D_SAE], "W_dec": [D_SAE, D_IN], "b_enc": [D_SAE], "b_dec": [D_IN]}
# the honest layout: W_enc [0, 96), W_dec [96, 192), b_enc [192, 216), b_dec [216, 232)
HONEST = {"W_enc": [0, 96], "W_dec": [96, 192], "b_enc": [192, 216], "b_dec": [216, 232]}


def _forged(offsets: dict[str, list[int]], body_len: int) -> bytes:
    """A safetensors file of the four SAE tensors, each F32 in its right shape, at the given data offsets.

    The shapes always match the number of bytes a range spans, so only where the bytes lie is
    wrong: a reader that trusts the offsets loads a valid-looking SAE from the wrong bytes.
    """
    header = {name: {"dtype": "F32", "shape": SHAPES[name], "data_offsets": offsets.get(name, HONEST[name])}
              for name in SHAPES}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    body = (np.arange(body_len // 4, dtype=np.float32) / 64).tobytes()
    return struct.pack("<Q", len(blob)) + blob + body


FORGED = {
    "negative offsets (b_dec reads b_enc's bytes)": ({"b_dec": [-40, -24]}, 216),
    "identical ranges (W_dec is W_enc's bytes)": ({"W_dec": [0, 96], "b_enc": [96, 120], "b_dec": [120, 136]},
                                                   136),
    "overlapping ranges": ({"b_dec": [208, 224]}, 224),
    "a gap between ranges": ({"b_dec": [220, 236]}, 236),
    "a range past the body": ({}, 224),
    "bytes after the last range": ({}, 240),
}


def test_the_honest_layout_loads(tmp_path: Path) -> None:
    root = _saelens(tmp_path / "sae", CFG, _forged({}, 232))
    assert corrsteer.SAE.load(root).d_sae == D_SAE


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_safetensors_offsets_are_refused_naming_the_file(tmp_path: Path, case: str) -> None:
    offsets, body_len = FORGED[case]
    root = _saelens(tmp_path / "sae", CFG, _forged(offsets, body_len))
    with pytest.raises(CorrsteerError, match="sae_weights.safetensors"):
        corrsteer.SAE.load(root)


def test_shape_that_disagrees_with_the_offsets_is_refused(tmp_path: Path) -> None:
    blob = json.dumps({"W_enc": {"dtype": "F32", "shape": [D_IN, D_SAE], "data_offsets": [0, 8]}}).encode()
    data = struct.pack("<Q", len(blob)) + blob + bytes(8)
    root = _saelens(tmp_path / "sae", CFG, data)
    with pytest.raises(CorrsteerError, match="sae_weights.safetensors"):
        corrsteer.SAE.load(root)


# ------------------------------------------------------------------------------------ SAE configs


@pytest.mark.parametrize("field, value", [
    ("apply_b_dec_to_input", "false"),
    ("apply_b_dec_to_input", "true"),
    ("apply_b_dec_to_input", 0),
    ("d_sae", D_SAE + 0.7),  # 6.7: int() would truncate it to the 6 the weights have
    ("d_in", "4"),
    ("hook_layer", 7),
])
def test_sae_config_values_are_read_strictly(tmp_path: Path, field: str, value: object) -> None:
    root = _saelens(tmp_path / "sae", {**CFG, field: value})
    with pytest.raises(CorrsteerError, match=rf"cfg\.json.*{field}"):
        corrsteer.SAE.load(root)


def test_topk_k_of_2_9_is_refused_not_truncated(tmp_path: Path) -> None:
    root = _saelens(tmp_path / "sae", {**CFG, "architecture": "topk", "k": 2.9})
    with pytest.raises(CorrsteerError, match=r"cfg\.json.*'k'"):
        corrsteer.SAE.load(root)


def test_integral_floats_and_agreeing_fields_still_load(tmp_path: Path) -> None:
    root = _saelens(tmp_path / "sae", {**CFG, "architecture": "topk", "k": 2.0, "d_sae": float(D_SAE),
                                       "hook_layer": 3})
    sae = corrsteer.SAE.load(root)
    assert (sae.k, sae.d_sae, sae.layer) == (2, D_SAE, 3)


# ------------------------------------------------------------------------------------ SAE objects


@pytest.fixture
def sae() -> corrsteer.SAE:
    w = _weights()
    return corrsteer.SAE(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], threshold=np.zeros(D_SAE, np.float32))


def test_writing_nan_into_W_enc_is_refused(sae: corrsteer.SAE) -> None:
    x = np.ones((2, D_IN), np.float32)
    before = sae.encode(x)
    with pytest.raises(ValueError, match="read-only"):
        sae.W_enc[0, 0] = np.nan
    np.testing.assert_array_equal(sae.encode(x), before)


@pytest.mark.parametrize("name, value", [("threshold", None), ("architecture", "gelu"), ("W_enc", None),
                                         ("k", 3), ("apply_b_dec_to_input", True)])
def test_assigning_sae_attributes_is_refused(sae: corrsteer.SAE, name: str, value: object) -> None:
    x = np.ones((2, D_IN), np.float32)
    before = sae.encode(x)
    with pytest.raises(AttributeError):
        setattr(sae, name, value)
    with pytest.raises(AttributeError):
        setattr(sae.cfg, name if name in ("architecture", "k", "apply_b_dec_to_input") else "d_sae", value)
    np.testing.assert_array_equal(sae.encode(x), before)


def test_weights_passed_in_are_copied(sae: corrsteer.SAE) -> None:
    w = _weights()
    mine = w["W_enc"].copy()
    s = corrsteer.SAE(mine, w["b_enc"], w["W_dec"], w["b_dec"], threshold=np.zeros(D_SAE, np.float32))
    x = np.ones((2, D_IN), np.float32)
    before = s.encode(x)
    mine[:] = np.nan  # the caller's array, not the SAE's
    np.testing.assert_array_equal(s.encode(x), before)


# ------------------------------------------------------------------------------------ custom tasks


def _rows(n: int = 20) -> list[dict]:
    return [{"text": f"review {i}", "label": "pos" if i % 2 else "neg"} for i in range(n)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("label", [None, "", "  ", ["pos"], {"a": 1}])
def test_jsonl_label_that_is_not_a_value_is_refused_naming_file_row_and_column(tmp_path: Path,
                                                                              label: object) -> None:
    rows = _rows()
    rows[5]["label"] = label
    path = _jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(ValueError, match=r"data\.jsonl:6: .*'label'"):
        get_task("custom", path=str(path)).samples("train")


def test_jsonl_numeric_labels_are_values(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(20)]
    task = get_task("custom", path=str(_jsonl(tmp_path / "d.jsonl", rows)))
    assert task.samples("test")[0].options == ("0", "1")


@pytest.mark.parametrize("text", [None, ["a"], {"b": 1}])
def test_jsonl_template_field_that_is_not_text_is_refused(tmp_path: Path, text: object) -> None:
    rows = _rows()
    rows[3]["text"] = text
    path = _jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(ValueError, match=r"data\.jsonl:4: .*'text'"):
        get_task("custom", path=str(path)).samples("train")


def test_short_csv_row_is_refused_naming_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    lines = ["text,label"] + [f"{r['text']},{r['label']}" for r in _rows()]
    lines[7] = "review without a label"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"data\.csv:8: .*'label'"):
        get_task("custom", path=str(path)).samples("train")


def test_long_csv_row_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    lines = ["text,label"] + [f"{r['text']},{r['label']}" for r in _rows()]
    lines[4] = "review 3,pos,extra"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"data\.csv:5: .*3 fields.*header has 2"):
        get_task("custom", path=str(path)).samples("train")


def test_no_prompt_lists_a_label_that_no_row_has(tmp_path: Path) -> None:
    """The silent part of the bug: a bad row must not add an option to every prompt."""
    path = _jsonl(tmp_path / "ok.jsonl", _rows())
    task = get_task("custom", path=str(path))
    assert {s.options for s in task.samples("train")} == {("neg", "pos")}


@pytest.mark.parametrize("value", [-5, 0, 2.5, "8", True, None])
def test_custom_max_new_tokens_must_be_a_positive_int(tmp_path: Path, value: object) -> None:
    path = _jsonl(tmp_path / "d.jsonl", _rows())
    with pytest.raises((ValueError, TypeError), match="max_new_tokens"):
        get_task("custom", path=str(path), max_new_tokens=value)
