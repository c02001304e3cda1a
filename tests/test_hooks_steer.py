"""steer(): adds vectors at exactly the generation positions, on tiny random models.

The expected results are computed independently of corrsteer's position tracker: the
generation positions of a left-padded batch are the columns ``>= W - 1`` (``W`` the
padded prompt width, from the tokenizer), and a plain torch hook adds the vector there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from corrsteer.errors import CorrsteerError
from corrsteer.hooks import steer

PROMPTS = ["The cat sat on the mat", "Hi", "Once upon a time,"]
N_NEW = 6


def _batch(tok: Any, prompts: list[str] = PROMPTS) -> dict[str, torch.Tensor]:
    return dict(tok(prompts, return_tensors="pt", padding=True))


def _vec(seed: int, d: int = 32, norm: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g)
    return v / v.norm() * norm


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions within each sequence, as generate computes them for a left-padded batch."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _greedy(model: Any, batch: dict[str, torch.Tensor], **kw: Any) -> torch.Tensor:
    return model.generate(**batch, max_new_tokens=N_NEW, do_sample=False, **kw)


class ManualSteer:
    """Reference: a plain forward hook adding ``v`` to layer outputs at columns ``>= first`` where valid.

    Prepended, like steer(), so that transformers' own hidden-state recorders see the change.
    """

    def __init__(self, model: Any, vectors: dict[int, torch.Tensor], first: int, valid: torch.Tensor | None = None):
        self.handles = []
        for layer, v in vectors.items():
            def hook(mod: Any, args: Any, out: torch.Tensor, v: torch.Tensor = v) -> torch.Tensor:
                out = out.clone()
                add = out[:, first:] + v
                if valid is not None:
                    add = torch.where(valid[:, first:, None], add, out[:, first:])
                out[:, first:] = add
                return out
            self.handles.append(model.model.layers[layer].register_forward_hook(hook, prepend=True))

    def __enter__(self) -> ManualSteer:
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


def corrsteer_hooks(model: Any) -> list[Any]:
    """Every forward (pre-)hook on ``model`` or its submodules that corrsteer registered.

    transformers registers hooks of its own (hidden-state recorders), which stay.
    """
    found = []
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            found += [fn for fn in hooks.values() if getattr(fn, "__module__", "").startswith("corrsteer")]
    return found


def _no_hooks_left(model: Any) -> bool:
    return not corrsteer_hooks(model) and "generate" not in model.__dict__


def test_steered_hidden_states_equal_manual_forward(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer)
    width = batch["input_ids"].shape[1]
    vectors = {0: _vec(0), 2: _vec(1)}
    with steer(tiny_model, vectors):
        out = _greedy(tiny_model, batch, use_cache=False, output_hidden_states=True, return_dict_in_generate=True)
    seq = out.sequences[:, :-1]  # the last forward of a cache-less generate sees every token but the last
    mask = torch.cat([batch["attention_mask"], torch.ones(3, seq.shape[1] - width, dtype=torch.long)], dim=1)
    kw = dict(attention_mask=mask, position_ids=_position_ids(mask), output_hidden_states=True)
    with ManualSteer(tiny_model, vectors, first=width - 1), torch.no_grad():
        manual = tiny_model(seq, **kw)
    with torch.no_grad():
        plain = tiny_model(seq, **kw)
    for layer, (got, want, base) in enumerate(zip(out.hidden_states[-1], manual.hidden_states, plain.hidden_states)):
        assert torch.equal(got, want), f"hidden_states[{layer}] differs from the manual forward"
        prompt = batch["attention_mask"][:, : width - 1].bool()  # padding rows attend to anything: skip them
        assert torch.equal(got[:, : width - 1][prompt], base[:, : width - 1][prompt]), f"prompt changed at {layer}"
    assert not torch.equal(out.hidden_states[-1][1][:, width - 1:], plain.hidden_states[1][:, width - 1:])
    # with the cache on, every generated token is the argmax of the manually steered forward
    with steer(tiny_model, vectors):
        cached = _greedy(tiny_model, batch)
    mask = torch.cat([batch["attention_mask"], torch.ones(3, N_NEW - 1, dtype=torch.long)], dim=1)
    with ManualSteer(tiny_model, vectors, first=width - 1), torch.no_grad():
        logits = tiny_model(cached[:, :-1], attention_mask=mask, position_ids=_position_ids(mask)).logits
    assert torch.equal(logits[:, width - 1:].argmax(-1), cached[:, width:])


def test_cache_on_off_same_tokens_and_steering_changes_them(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer)
    base = _greedy(tiny_model, batch)
    with steer(tiny_model, {1: _vec(3, norm=16.0), 2: _vec(4, norm=16.0)}):
        on = _greedy(tiny_model, batch, use_cache=True)
        off = _greedy(tiny_model, batch, use_cache=False)
    assert torch.equal(on, off), f"cache on {on.tolist()} != off {off.tolist()}"
    assert not torch.equal(on, base), "the steering vectors did not change any token; the test is too weak"


def test_batch_equals_single(tiny_model: Any, tiny_tokenizer: Any) -> None:
    vectors = {1: _vec(5, norm=3.0)}
    batch = _batch(tiny_tokenizer)
    width = batch["input_ids"].shape[1]
    with steer(tiny_model, vectors):
        batched = _greedy(tiny_model, batch)[:, width:]
        singles = []
        for p in PROMPTS:
            alone = _batch(tiny_tokenizer, [p])
            singles.append(_greedy(tiny_model, alone)[0, alone["input_ids"].shape[1]:])  # shorter if it hit EOS
    for i, single in enumerate(singles):
        n = len(single)
        assert torch.equal(batched[i, :n], single), f"prompt {i}: batch {batched[i].tolist()} != {single.tolist()}"
        assert (batched[i, n:] == tiny_tokenizer.pad_token_id).all()


def test_zero_vector_leaves_logits_bit_identical(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer)
    kw = dict(output_logits=True, return_dict_in_generate=True)
    base = _greedy(tiny_model, batch, **kw)
    with steer(tiny_model, {0: torch.zeros(32), 1: np.zeros(32, np.float32), 2: torch.zeros(32)},
               positions="all"):
        zero = _greedy(tiny_model, batch, **kw)
    assert torch.equal(base.sequences, zero.sequences)
    for step, (a, b) in enumerate(zip(base.logits, zero.logits)):
        assert torch.equal(a, b), f"logits differ at step {step}"


def test_hooks_removed_after_block_and_after_exception(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer)
    base = _greedy(tiny_model, batch)
    with steer(tiny_model, {1: _vec(6, norm=4.0)}):
        assert not _no_hooks_left(tiny_model)
    assert _no_hooks_left(tiny_model)
    with pytest.raises(KeyError), steer(tiny_model, {0: _vec(7, norm=4.0), 2: _vec(8)}):
        _greedy(tiny_model, batch)
        raise KeyError("boom")
    assert _no_hooks_left(tiny_model)
    assert torch.equal(_greedy(tiny_model, batch), base)


def test_nesting_adds_both_and_inner_exit_keeps_outer(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer)
    a, b = _vec(9), _vec(10)
    with torch.no_grad():
        with steer(tiny_model, {1: a}):
            outer_only = tiny_model(**batch, output_hidden_states=True).hidden_states
            with steer(tiny_model, [(1, b)]):
                nested = tiny_model(**batch, output_hidden_states=True).hidden_states
            after_inner = tiny_model(**batch, output_hidden_states=True).hidden_states
        with steer(tiny_model, {1: a + b}):
            summed = tiny_model(**batch, output_hidden_states=True).hidden_states
    for layer in range(len(nested)):
        torch.testing.assert_close(nested[layer], summed[layer], rtol=1e-5, atol=1e-6)
        assert torch.equal(after_inner[layer], outer_only[layer])
    assert _no_hooks_left(tiny_model)


def test_plain_forward_steers_its_last_position_only(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer)
    width = batch["input_ids"].shape[1]
    vectors = {0: _vec(12)}
    with torch.no_grad():
        with steer(tiny_model, vectors):
            got = tiny_model(**batch, output_hidden_states=True).hidden_states
        with ManualSteer(tiny_model, vectors, first=width - 1):
            want = tiny_model(**batch, output_hidden_states=True).hidden_states
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_positions_all_steers_every_non_padding_position(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer)
    valid = batch["attention_mask"].bool()
    vectors = {1: _vec(13), 2: _vec(14)}
    with torch.no_grad():
        with steer(tiny_model, vectors, positions="all"):
            got = tiny_model(**batch, output_hidden_states=True).hidden_states
        with ManualSteer(tiny_model, vectors, first=0, valid=valid):
            want = tiny_model(**batch, output_hidden_states=True).hidden_states
        plain = tiny_model(**batch, output_hidden_states=True).hidden_states
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert torch.equal(got[2][~valid], plain[2][~valid]), "padding columns were steered"
    assert not torch.equal(got[2][valid], plain[2][valid])


def test_resid_pre_of_layer_equals_resid_post_of_previous(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer)
    v = _vec(15, norm=4.0)
    with steer(tiny_model, [(2, v, "resid_pre")]):
        pre = _greedy(tiny_model, batch, output_logits=True, return_dict_in_generate=True)
    with steer(tiny_model, [(1, v, "resid_post")]):
        post = _greedy(tiny_model, batch, output_logits=True, return_dict_in_generate=True)
    assert torch.equal(pre.sequences, post.sequences)
    for a, b in zip(pre.logits, post.logits):
        assert torch.equal(a, b)


def test_selection_applies_itself_and_from_its_saved_folder(tiny_llama: Any, tiny_tokenizer: Any,
                                                             tmp_path: Any) -> None:
    from corrsteer.method.features import Feature, Selection

    v = _vec(16, norm=4.0).numpy()
    feature = Feature(layer=1, index=0, sign=1, r=0.5, coefficient=4.0, mean_pos=4.0)
    sel = Selection(mode="all", features=[feature], directions={1: v[None] / 4.0}, coefficients={1: [4.0]})
    batch = _batch(tiny_tokenizer)
    with steer(tiny_llama, {1: v}):
        want = _greedy(tiny_llama, batch)
    with steer(tiny_llama, {1: 2.5 * v}):
        want_scaled = _greedy(tiny_llama, batch)
    with sel.apply(tiny_llama):
        from_object = _greedy(tiny_llama, batch)
    with Selection.load(sel.save(tmp_path / "sel")).apply(tiny_llama):
        from_folder = _greedy(tiny_llama, batch)
    with sel.apply(tiny_llama, scale=2.5):
        scaled = _greedy(tiny_llama, batch)
    assert torch.equal(from_object, want) and torch.equal(from_folder, want)
    assert torch.equal(scaled, want_scaled) and not torch.equal(scaled, want)
    with pytest.raises(TypeError, match="selection.apply"):
        steer(tiny_llama, sel)
    with pytest.raises(TypeError, match="mapping"):
        steer(tiny_llama, str(tmp_path / "sel"))  # steer() takes vectors, not folders


def test_empty_interventions_steer_nothing(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer)
    base = _greedy(tiny_llama, batch)
    with steer(tiny_llama, {}):
        assert torch.equal(_greedy(tiny_llama, batch), base)


@pytest.mark.parametrize("interventions, error, match", [
    ({5: np.zeros(32, np.float32)}, ValueError, "out of range"),
    ({0: np.zeros(31, np.float32)}, ValueError, "d_model=32"),
    ({0: np.zeros((1, 32), np.float32)}, ValueError, "shape"),
    ({0: np.full(32, np.nan, np.float32)}, ValueError, "NaN"),
    ({0: np.zeros(32, np.int64)}, TypeError, "floating"),
    ({0: [0.0] * 32}, TypeError, "numpy array or torch tensor"),
    ([(0, np.zeros(32, np.float32), "mlp_out")], ValueError, "resid_post, resid_pre"),
    ([(0,)], TypeError, "layer, vector"),
    ({1.5: np.zeros(32, np.float32)}, TypeError, "must be an int"),
    (42, TypeError, "mapping"),
])
def test_bad_interventions_raise(tiny_llama: Any, interventions: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        steer(tiny_llama, interventions)
    assert _no_hooks_left(tiny_llama)


def test_bad_arguments_raise(tiny_llama: Any, tiny_tokenizer: Any, tmp_path: Any) -> None:
    v = {0: np.zeros(32, np.float32)}
    with pytest.raises(ValueError, match="positions"):
        steer(tiny_llama, v, positions="last")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        steer("model", v)
    with pytest.raises(TypeError, match="mapping"):
        steer(tiny_llama, tmp_path)  # a folder: steer() takes vectors (Selection.load(folder).apply(model))
    right = dict(tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="right"))
    with pytest.raises(ValueError, match="left"), steer(tiny_llama, v):
        _greedy(tiny_llama, right)
    assert _no_hooks_left(tiny_llama)


def test_layer_called_outside_the_model_raises(tiny_llama: Any) -> None:
    with steer(tiny_llama, [(0, _vec(17), "resid_pre")]), pytest.raises(CorrsteerError, match="outside a forward"):
        tiny_llama.model.layers[0](torch.zeros(1, 2, 32))


@pytest.mark.model
def test_embedded_gemma_steering_is_cache_and_batch_invariant(make_tiny_sae: Any) -> None:
    from corrsteer.hooks import capture
    from corrsteer.method.generation import generate
    from corrsteer.models import load_model
    from corrsteer.models.embedded import EMBEDDED, locate_parts

    try:
        locate_parts(EMBEDDED["gemma-3-270m"])
    except CorrsteerError as exc:
        pytest.skip(f"embedded model not installed: {exc}")
    model, tok = load_model("gemma-3-270m", device="cpu", dtype="float32")
    prompts = ["The capital of France is", "Water boils at"]
    batch = dict(tok(prompts, return_tensors="pt", padding=True, padding_side="left"))
    width = batch["input_ids"].shape[1]
    base = _greedy(model, batch)
    v = _vec(18, d=640, norm=200.0)
    with steer(model, {6: v}):
        on, off = _greedy(model, batch), _greedy(model, batch, use_cache=False)
        alone = _greedy(model, dict(tok(prompts[:1], return_tensors="pt")))
    assert torch.equal(on, off) and not torch.equal(on, base)
    assert alone[0, -N_NEW:].tolist() == on[0, width:].tolist()
    sae = make_tiny_sae(640, 64, "relu", seed=0, layer=6)
    with capture(model, [sae]) as cap:
        gens = generate(model, tok, prompts, N_NEW, stop_strings=["\n"], capture=cap)
    assert cap.counts().tolist() == [g.n_new_tokens for g in gens]
