"""llama.cpp itself applies corrsteer's exported control vector as corrsteer steers: the ``llama`` extra.

llama-cpp-python (built from its sdist) loads the embedded ``gemma-3-270m`` GGUF, the very file
``corrsteer.load_model("gemma-3-270m")`` converts, and applies the file that
``Selection.to_gguf`` wrote through its control-vector call. The change in next-token logits
the vector causes there must match the change ``selection.apply(model, positions="all")``
causes in transformers (Pearson r over the vocabulary >= 0.95 on every prompt), and a vector
written one layer off must match clearly worse, so that an off-by-one in the layer mapping
cannot pass. The file is laid into llama.cpp's buffer here as llama.cpp's own loader
(``common_control_vector_load``) lays it, independently of corrsteer's reader.

Slow (two model loads, ~1 min) and skipped without llama-cpp-python or the embedded model.
Run: ``python -m pytest -q -m slow tests/test_llama_cpp.py -s`` (``-s`` prints the numbers).
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest
import torch

from corrsteer.integrations.llama_cpp import set_control_vector
from corrsteer.method.features import Selection
from corrsteer.storage.control_vector import read_control_vector, write_control_vector

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra built from its sdist: "
                                                     "bash scripts/install_extras.sh llama")
gguf = pytest.importorskip("gguf")

pytestmark = [pytest.mark.slow, pytest.mark.model]

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Once upon a time, there was a",
           "The best way to learn a language is"]
R_MIN = 0.95  # the bar: r >= 0.95 on every prompt
# each vector's norm, as a fraction of the residual norm at its block. Stronger vectors dominate the
# logits through the unembedding alone, and then a vector one block off agrees almost as well
# (r 0.99 at 0.5, 0.997 at 1.0); at 0.25 the block it is added after matters.
STRENGTH = 0.25


@pytest.fixture(scope="module")
def gemma():
    from corrsteer.models import load_model
    from corrsteer.models.embedded import embedded_gguf

    try:
        model, tok = load_model("gemma-3-270m", device="cpu", dtype="float32")
        path = embedded_gguf("gemma-3-270m")
    except Exception as exc:  # noqa: BLE001 - the embedded packages are optional
        pytest.skip(f"embedded model not installed: {exc}")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=256, n_threads=2, verbose=False, seed=0)
    return model, tok, llm


def llama_cpp_buffer(path, n_embd: int, n_layer: int) -> np.ndarray:
    """The float buffer llama.cpp's loader builds from a control-vector file (layer 1 at offset 0).

    Padded with zeros to every layer 1 … n_layer-1: ``llama_set_adapter_cvec`` leaves the layers
    past the end of a shorter buffer as the previous call set them.
    """
    reader = gguf.GGUFReader(str(path))
    data = np.zeros(n_embd * (n_layer - 1), np.float32)
    for t in reader.tensors:
        layer = int(re.fullmatch(r"direction\.(\d+)", t.name).group(1))
        assert 1 <= layer < n_layer and t.tensor_type == gguf.GGMLQuantizationType.F32 and t.n_elements == n_embd
        data[n_embd * (layer - 1):n_embd * layer] += np.asarray(t.data, np.float32)
    return data


def llama_next_logits(llm, ids: list[int], buffer: np.ndarray | None, n_embd: int, n_layer: int) -> np.ndarray:
    """Next-token logits after ``ids`` in llama.cpp, with the control vector ``buffer`` set (None: cleared)."""
    ctx = llm.ctx
    if buffer is None:
        rc = llama_cpp.llama_set_adapter_cvec(ctx, None, 0, n_embd, -1, -1)
    else:
        arr = np.ascontiguousarray(buffer, dtype=np.float32)
        rc = llama_cpp.llama_set_adapter_cvec(ctx, arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), arr.size,
                                              n_embd, 1, n_layer)  # as llama.cpp's --control-vector: layers 1..n
    assert rc == 0
    llm.reset()
    llm.eval(ids)  # logits_all=False: llama.cpp keeps the last position's logits only
    last = llama_cpp.llama_get_logits_ith(ctx, -1)
    return np.ctypeslib.as_array(last, shape=(llm.n_vocab(),)).astype(np.float64)


def hf_next_logits(model, ids: list[int], selection: Selection | None) -> np.ndarray:
    with torch.no_grad():
        x = torch.tensor([ids])
        if selection is None:
            return model(x).logits[0, -1].double().numpy()
        with selection.apply(model, positions="all"):
            return model(x).logits[0, -1].double().numpy()


def residual_norm(model, tok, layer: int) -> float:
    """Median norm of layer ``layer``'s output over the prompts' tokens (sets each vector's scale)."""
    enc = tok(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        h = model(**enc, output_hidden_states=True).hidden_states[layer + 1][0]
    return float(h.norm(dim=-1).median())


def selection_at(model, tok, sites: dict[int, str], seed: int = 0) -> Selection:
    rng = np.random.default_rng(seed)
    directions, coefficients = {}, {}
    for layer, site in sites.items():
        v = rng.standard_normal((1, 640)).astype(np.float32)
        directions[layer] = v / np.linalg.norm(v)
        block = layer if site == "resid_post" else layer - 1
        coefficients[layer] = np.array([STRENGTH * residual_norm(model, tok, block)])
    return Selection(mode="all", features=[], directions=directions, coefficients=coefficients, sites=dict(sites),
                     meta={"model": "gemma-3-270m"})


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Relative error of ``a`` against ``b``."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("sites", [{6: "resid_post"}, {3: "resid_post", 10: "resid_pre", 13: "resid_post"}],
                         ids=["L6", "L3+L10pre+L13"])
def test_llama_cpp_applies_the_exported_vector_as_corrsteer_steers(gemma, tmp_path, sites) -> None:
    model, tok, llm = gemma
    n_embd, n_layer = llm.n_embd(), model.config.num_hidden_layers
    sel = selection_at(model, tok, sites)
    path = sel.to_gguf(tmp_path / "steer.gguf", "gemma3")
    right = llama_cpp_buffer(path, n_embd, n_layer)
    # the same vectors, one block later: what an off-by-one in the layer mapping would export
    shifted = {n + 1: v for n, v in read_control_vector(path).directions.items()}
    off = write_control_vector(tmp_path / "off.gguf", shifted, "gemma3")
    wrong = llama_cpp_buffer(off, n_embd, n_layer)
    rows = []
    for prompt in PROMPTS:
        ids = tok(prompt)["input_ids"]
        hf_base, hf_steered = hf_next_logits(model, ids, None), hf_next_logits(model, ids, sel)
        ll_base = llama_next_logits(llm, ids, None, n_embd, n_layer)
        ll_steered = llama_next_logits(llm, ids, right, n_embd, n_layer)
        ll_off = llama_next_logits(llm, ids, wrong, n_embd, n_layer)
        d_hf = hf_steered - hf_base
        rows.append((prompt, corr(hf_base, ll_base), corr(d_hf, ll_steered - ll_base), corr(d_hf, ll_off - ll_base),
                     rel(ll_steered - ll_base, d_hf), rel(ll_off - ll_base, d_hf)))
    print(f"\nsites {sites}: r = Pearson r over the vocabulary, e = |d_llama - d_hf| / |d_hf|")
    for prompt, r_base, r_right, r_off, e_right, e_off in rows:
        print(f"  {prompt[:28]!r:32} unsteered logits r {r_base:.4f} | delta: exported r {r_right:.4f} e {e_right:.3f}"
              f" | one block off r {r_off:.4f} e {e_off:.3f}")
    # corrsteer's own llama-cpp-python helper sets the same vector (and clears it)
    ids = tok(PROMPTS[0])["input_ids"]
    set_control_vector(llm, path)
    llm.reset()
    llm.eval(ids)
    via_helper = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    np.testing.assert_array_equal(via_helper, llama_next_logits(llm, ids, right, n_embd, n_layer))
    set_control_vector(llm, None)
    llm.reset()
    llm.eval(ids)
    cleared = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    np.testing.assert_array_equal(cleared, llama_next_logits(llm, ids, None, n_embd, n_layer))
    assert all(r[1] > 0.99 for r in rows), "llama.cpp and transformers disagree unsteered"
    assert all(r[2] >= R_MIN for r in rows)
    # an off-by-one export: on every prompt at least 3x the disagreement (1 - r) and 2x the error e
    assert all(1 - r[3] >= 3 * (1 - r[2]) and r[5] >= 2 * r[4] for r in rows)
