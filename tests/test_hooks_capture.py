"""capture(): pooled SAE activations over exactly the generation positions, on tiny random models.

The expected values come from a manual computation that does not use corrsteer's
position tracker: one plain forward over the final sequences records each layer's
output with a plain torch hook, the generation columns ``W-1 … end-1`` of each row are
selected by hand (``W`` the padded prompt width, ``end`` the column of the first
generated EOS or the end of generation), then ``corrsteer.core.reference`` encodes and pools.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from corrsteer.core import reference
from corrsteer.errors import CorrsteerError
from corrsteer.hooks import capture, steer

PROMPTS = ["The cat sat on the mat", "Hi", "Once upon a time,"]
N_NEW = 7
D_SAE = 48


def _batch(tok: Any, prompts: list[str] = PROMPTS) -> dict[str, torch.Tensor]:
    return dict(tok(prompts, return_tensors="pt", padding=True))


def _saes(make: Any, archs: tuple[str, ...] = ("relu", "topk", "jumprelu")) -> dict[int, Any]:
    return {layer: make(32, D_SAE, arch, seed=layer, layer=layer) for layer, arch in enumerate(archs)}


def layer_outputs(model: Any, seqs: torch.Tensor, mask: torch.Tensor,
                  add: tuple[int, torch.Tensor, int] | None = None) -> dict[int, np.ndarray]:
    """Each decoder layer's output (n_seq, n_tok, d_model) for one plain forward, via plain hooks.

    ``add=(layer, v, first)`` adds ``v`` to that layer's output at columns ``>= first`` first.
    """
    got: dict[int, np.ndarray] = {}
    handles = [layer.register_forward_hook(lambda m, a, out, i=i: got.__setitem__(i, out.detach().numpy().copy()))
               for i, layer in enumerate(model.model.layers)]
    if add is not None:
        layer, v, first = add

        def steer_hook(m: Any, a: Any, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, first:] += v
            return out

        handles.append(model.model.layers[layer].register_forward_hook(steer_hook, prepend=True))
    try:
        with torch.no_grad():
            model(seqs, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    finally:
        for h in handles:
            h.remove()
    return got


def manual_pooled(model: Any, saes: dict[int, Any], seqs: torch.Tensor, prompt_mask: torch.Tensor,
                  ends: list[int], pool: str, prompt_too: bool = False) -> dict[int, np.ndarray]:
    """Pool by hand over columns ``[W-1, ends[i])`` of row i (plus valid prompt columns if ``prompt_too``)."""
    n_seq, width = prompt_mask.shape
    seqs = seqs[:, : max(ends)]  # the outputs at columns < max(ends) need no later token
    mask = torch.cat([prompt_mask, torch.ones(n_seq, seqs.shape[1] - width, dtype=torch.long)], dim=1)
    outs = layer_outputs(model, seqs, mask)
    cols = np.arange(seqs.shape[1])
    take = (cols[None, :] >= width - 1) & (cols[None, :] < np.asarray(ends)[:, None])  # (n_seq, n_tok)
    if prompt_too:
        take |= (cols[None, :] < width) & mask.numpy().astype(bool)
    return {layer: reference.sae_encode_pooled(sae, outs[layer], take, pool) for layer, sae in saes.items()}


def _first_eos_ends(seqs: torch.Tensor, width: int, eos: set[int]) -> list[int]:
    """Per row, the column of the first generated EOS token, else that of the last token (never fed back)."""
    ends = []
    for row in seqs.tolist():
        hit = [c for c in range(width, len(row)) if row[c] in eos]
        ends.append(hit[0] if hit else len(row) - 1)
    return ends


def _assert_pooled(got: dict[int, np.ndarray], want: dict[int, np.ndarray], what: str) -> None:
    assert got.keys() == want.keys()
    for layer in want:
        assert got[layer].dtype == np.float32 and got[layer].shape == want[layer].shape
        np.testing.assert_allclose(got[layer], want[layer], rtol=1e-4, atol=1e-4, err_msg=f"{what}, layer {layer}")
        assert (want[layer] > 0).mean() > 0.05, f"{what}: layer {layer} almost never fires; the test is too weak"


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_capture_equals_manual_computation(tiny_model: Any, tiny_tokenizer: Any, make_tiny_sae: Any,
                                           pool: str, use_cache: bool) -> None:
    batch = _batch(tiny_tokenizer)
    saes = _saes(make_tiny_sae)
    with capture(tiny_model, saes, pool=pool) as cap:
        seqs = tiny_model.generate(**batch, max_new_tokens=N_NEW, do_sample=False, use_cache=use_cache)
    width = batch["input_ids"].shape[1]
    ends = _first_eos_ends(seqs, width, {tiny_tokenizer.eos_token_id})
    want = manual_pooled(tiny_model, saes, seqs, batch["attention_mask"], ends, pool)
    _assert_pooled(cap.result(), want, f"pool={pool} use_cache={use_cache}")
    assert cap.counts().tolist() == [e - (width - 1) for e in ends]


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_torch_backend_equals_core_backend(tiny_llama: Any, tiny_tokenizer: Any, make_tiny_sae: Any,
                                           pool: str) -> None:
    batch = _batch(tiny_tokenizer)
    saes = _saes(make_tiny_sae)
    results = {}
    for backend in ("core", "torch"):
        for use_cache in (True, False):
            with capture(tiny_llama, saes, pool=pool, backend=backend) as cap:
                tiny_llama.generate(**batch, max_new_tokens=N_NEW, do_sample=False, use_cache=use_cache)
            results[backend, use_cache] = (cap.result(), cap.counts())
    core, counts = results["core", True]
    for key, (got, got_counts) in results.items():
        _assert_pooled(got, core, f"{key}")
        assert np.array_equal(got_counts, counts)


@pytest.mark.parametrize("backend", ["core", "torch"])
def test_eos_masks_positions_after_it(tiny_gemma2: Any, tiny_tokenizer: Any, make_tiny_sae: Any, backend: str) -> None:
    batch = _batch(tiny_tokenizer)
    width = batch["input_ids"].shape[1]
    free = tiny_gemma2.generate(**batch, max_new_tokens=N_NEW, do_sample=False)[:, width:].tolist()
    # a token that some row emits for the first time at step k >= 1 becomes the EOS
    row, k = next((r, k) for r, toks in enumerate(free) for k in range(1, N_NEW - 1) if toks[k] not in toks[:k])
    eos = free[row][k]
    saes = _saes(make_tiny_sae)
    for use_cache in (True, False):
        with capture(tiny_gemma2, saes, pool="max", backend=backend) as cap:
            seqs = tiny_gemma2.generate(**batch, max_new_tokens=N_NEW, do_sample=False, eos_token_id=eos,
                                        use_cache=use_cache)
        ends = _first_eos_ends(seqs, width, {eos})
        assert ends[row] == width + k and max(ends) > ends[row], f"EOS at {ends}: the test does not exercise masking"
        want = manual_pooled(tiny_gemma2, saes, seqs, batch["attention_mask"], ends, "max")
        _assert_pooled(cap.result(), want, f"eos, use_cache={use_cache}")
        assert cap.counts()[row] == k + 1  # the positions producing tokens 1 … k and the EOS


def test_stop_strings_in_model_generate_mask_positions_after_them(tiny_llama: Any, tiny_tokenizer: Any,
                                                                  make_tiny_sae: Any) -> None:
    batch = _batch(tiny_tokenizer)
    width = batch["input_ids"].shape[1]
    free = tiny_llama.generate(**batch, max_new_tokens=N_NEW, do_sample=False)
    texts = [tiny_tokenizer.decode(row, skip_special_tokens=True) for row in free.tolist()]
    n_prompt = [len(tiny_tokenizer.decode(row[:width], skip_special_tokens=True)) for row in free.tolist()]
    # two characters that first occur in some row's text (prompt included) at its generated tokens k, k+1
    row, k = next((r, k) for r, t in enumerate(texts) for k in range(1, N_NEW - 2)
                  if t.find(t[n_prompt[r] + k: n_prompt[r] + k + 2]) == n_prompt[r] + k)
    stop = texts[row][n_prompt[row] + k: n_prompt[row] + k + 2]
    saes = _saes(make_tiny_sae)
    for use_cache in (True, False):
        with capture(tiny_llama, saes, pool="mean") as cap:
            seqs = tiny_llama.generate(**batch, max_new_tokens=N_NEW, do_sample=False, stop_strings=[stop],
                                       tokenizer=tiny_tokenizer, use_cache=use_cache)
        ends = []  # transformers' stop strings also match across the end of the prompt
        for ids in seqs.tolist():
            n = next((n for n in range(1, len(ids) - width)
                      if stop in tiny_tokenizer.decode(ids[: width + n], skip_special_tokens=True)), None)
            ends.append(len(ids) - 1 if n is None else width + n - 1)  # the completing token's column
        assert ends[row] == width + k + 1 and max(ends) > ends[row], f"stop {stop!r}: ends {ends}"
        want = manual_pooled(tiny_llama, saes, seqs, batch["attention_mask"], ends, "mean")
        _assert_pooled(cap.result(), want, f"stop strings, use_cache={use_cache}")
        assert cap.counts()[row] == k + 2


def test_left_padded_batch_equals_sequences_alone(tiny_gemma3: Any, tiny_tokenizer: Any,
                                                  make_tiny_sae: Any) -> None:
    saes = _saes(make_tiny_sae)
    with capture(tiny_gemma3, saes, pool="max") as cap:
        tiny_gemma3.generate(**_batch(tiny_tokenizer), max_new_tokens=N_NEW, do_sample=False)
        batched = cap.take()
        for prompt in PROMPTS:
            tiny_gemma3.generate(**_batch(tiny_tokenizer, [prompt]), max_new_tokens=N_NEW, do_sample=False)
        alone = cap.result()
    assert len(cap.results) == len(PROMPTS)
    _assert_pooled(batched, alone, "batch vs alone")


def test_positions_all_pools_prompt_and_generation(tiny_llama: Any, tiny_tokenizer: Any, make_tiny_sae: Any) -> None:
    batch = _batch(tiny_tokenizer)
    width = batch["input_ids"].shape[1]
    saes = _saes(make_tiny_sae)
    for use_cache in (True, False):
        with capture(tiny_llama, saes, pool="mean", positions="all") as cap:
            seqs = tiny_llama.generate(**batch, max_new_tokens=N_NEW, do_sample=False, use_cache=use_cache)
        ends = _first_eos_ends(seqs, width, {tiny_tokenizer.eos_token_id})
        want = manual_pooled(tiny_llama, saes, seqs, batch["attention_mask"], ends, "mean", prompt_too=True)
        _assert_pooled(cap.result(), want, f"positions=all, use_cache={use_cache}")
        n_prompt = batch["attention_mask"].sum(1)
        assert cap.counts().tolist() == [int(n) - 1 + e - (width - 1) for n, e in zip(n_prompt, ends)]


def test_plain_forward_pools_its_last_position(tiny_llama: Any, tiny_tokenizer: Any, make_tiny_sae: Any) -> None:
    batch = _batch(tiny_tokenizer)
    width = batch["input_ids"].shape[1]
    saes = _saes(make_tiny_sae)
    with capture(tiny_llama, saes, pool="max") as cap, torch.no_grad():
        tiny_llama(**batch)
        tiny_llama(**batch)
    want = manual_pooled(tiny_llama, saes, batch["input_ids"], batch["attention_mask"], [width] * 3, "max")
    assert len(cap.results) == 2 and cap.counts().tolist() == [1] * 6
    for layer, z in cap.result().items():
        np.testing.assert_allclose(z, np.concatenate([want[layer]] * 2), rtol=1e-5, atol=1e-5)


def test_hand_written_cached_loop_continues_the_set(tiny_llama: Any, tiny_tokenizer: Any,
                                                    make_tiny_sae: Any) -> None:
    batch = _batch(tiny_tokenizer)
    width = batch["input_ids"].shape[1]
    saes = _saes(make_tiny_sae)
    with capture(tiny_llama, saes, pool="max") as cap, torch.no_grad():
        positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # as generate and layer_outputs set them
        out = tiny_llama(**batch, position_ids=positions, use_cache=True)  # a new set: pools its last column
        first = cap.take()
        ids = out.logits[:, -1].argmax(-1, keepdim=True)  # (3, 1)
        mask = torch.cat([batch["attention_mask"], torch.ones(3, 1, dtype=torch.long)], dim=1)
        tiny_llama(input_ids=ids, attention_mask=mask, cache=out.cache, position_ids=mask.sum(1, keepdim=True) - 1)
        second, counts = cap.result(), cap.counts()
    assert counts.tolist() == [1, 1, 1] and len(cap.results) == 1
    seqs = torch.cat([batch["input_ids"], ids], dim=1)
    outs = layer_outputs(tiny_llama, seqs, mask)
    for col, got in ((width - 1, first), (width, second)):
        take = np.zeros(seqs.shape, bool)
        take[:, col] = True
        want = {layer: reference.sae_encode_pooled(sae, outs[layer], take, "max") for layer, sae in saes.items()}
        _assert_pooled(got, want, f"column {col}")


def test_take_during_cacheless_generate_never_refolds(tiny_llama: Any, tiny_tokenizer: Any,
                                                      make_tiny_sae: Any) -> None:
    batch = _batch(tiny_tokenizer)
    saes = _saes(make_tiny_sae)
    pieces: list[tuple[dict[int, np.ndarray], np.ndarray]] = []  # (pooled, counts) of each take()

    class TakeEveryThirdStep:  # a generate streamer: put() runs between two forward calls
        def __init__(self, cap: Any) -> None:
            self.cap, self.n = cap, 0

        def put(self, value: Any) -> None:
            self.n += 1
            if self.n % 3 == 0:
                counts = self.cap.counts()
                pieces.append((self.cap.take(), counts))

        def end(self) -> None:
            pass

    with capture(tiny_llama, saes, pool="max") as whole:
        tiny_llama.generate(**batch, max_new_tokens=N_NEW, do_sample=False, use_cache=False)
    with capture(tiny_llama, saes, pool="max") as cap:
        tiny_llama.generate(**batch, max_new_tokens=N_NEW, do_sample=False, use_cache=False,
                            streamer=TakeEveryThirdStep(cap))
        counts = cap.counts()
        pieces.append((cap.take(), counts))
    assert len(pieces) >= 3
    assert np.array_equal(sum(c for _, c in pieces), whole.counts()), "a position was pooled twice or never"
    merged = {layer: np.max(np.stack([p[layer] for p, _ in pieces]), axis=0) for layer in saes}
    _assert_pooled(merged, whole.result(), "max over the pieces")


def test_capture_reads_the_steered_stream_and_resid_pre(tiny_llama: Any, tiny_tokenizer: Any,
                                                        make_tiny_sae: Any) -> None:
    batch = _batch(tiny_tokenizer)
    post = {1: make_tiny_sae(32, D_SAE, "relu", seed=5, layer=1)}
    pre = {2: make_tiny_sae(32, D_SAE, "relu", seed=5, layer=2, site="resid_pre")}  # same weights, next layer's input
    v = torch.full((32,), 0.5)
    with steer(tiny_llama, {1: v}), capture(tiny_llama, post) as cap_post, capture(tiny_llama, pre) as cap_pre:
        seqs = tiny_llama.generate(**batch, max_new_tokens=N_NEW, do_sample=False)
    width = batch["input_ids"].shape[1]
    ends = _first_eos_ends(seqs, width, {tiny_tokenizer.eos_token_id})
    mask = torch.cat([batch["attention_mask"], torch.ones(3, seqs.shape[1] - width, dtype=torch.long)], 1)
    outs = layer_outputs(tiny_llama, seqs, mask, add=(1, v, width - 1))
    cols = np.arange(seqs.shape[1])
    take = (cols[None] >= width - 1) & (cols[None] < np.asarray(ends)[:, None])
    want = reference.sae_encode_pooled(post[1], outs[1], take, "max")
    _assert_pooled(cap_post.result(), {1: want}, "steered resid_post")
    np.testing.assert_array_equal(cap_pre.result()[2], cap_post.result()[1])


def test_hooks_removed_after_exception(tiny_llama: Any, tiny_tokenizer: Any, make_tiny_sae: Any) -> None:
    with pytest.raises(RuntimeError, match="boom"), capture(tiny_llama, _saes(make_tiny_sae)) as cap:
        tiny_llama.generate(**_batch(tiny_tokenizer), max_new_tokens=2, do_sample=False)
        raise RuntimeError("boom")
    assert not cap.active and "generate" not in tiny_llama.__dict__
    for module in tiny_llama.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            assert not [f for f in hooks.values() if getattr(f, "__module__", "").startswith("corrsteer")]
    assert cap.result()[0].shape == (3, D_SAE)  # what was pooled before the exception is kept


def test_result_is_empty_before_any_call(tiny_llama: Any, make_tiny_sae: Any) -> None:
    with capture(tiny_llama, [make_tiny_sae(32, D_SAE, seed=1, layer=1)]) as cap:
        pass
    assert cap.result()[1].shape == (0, D_SAE) and cap.counts().shape == (0,) and cap.results == []


def test_bad_arguments_raise(tiny_llama: Any, tiny_tokenizer: Any, make_tiny_sae: Any) -> None:
    sae = make_tiny_sae(32, D_SAE, seed=1, layer=1)
    with pytest.raises(ValueError, match="d_model=32"):
        capture(tiny_llama, {0: make_tiny_sae(16, D_SAE, seed=1)})
    with pytest.raises(ValueError, match="reads layer 1"):
        capture(tiny_llama, {0: sae})
    with pytest.raises(ValueError, match="out of range"):
        capture(tiny_llama, {7: make_tiny_sae(32, D_SAE, seed=1)})
    with pytest.raises(ValueError, match="no .layer"):
        capture(tiny_llama, [make_tiny_sae(32, D_SAE, seed=1)])
    with pytest.raises(ValueError, match="resid_post, resid_pre"):
        capture(tiny_llama, {1: make_tiny_sae(32, D_SAE, seed=1, layer=1, site="mlp_out")})
    with pytest.raises(ValueError, match="empty"):
        capture(tiny_llama, {})
    with pytest.raises(TypeError, match="without .W_enc"):
        capture(tiny_llama, {1: object()})
    with pytest.raises(ValueError, match="two SAEs"):
        capture(tiny_llama, [sae, sae])
    for kw, match in (({"pool": "sum"}, "pool"), ({"positions": "last"}, "positions"),
                      ({"backend": "cuda"}, "backend")):
        with pytest.raises(ValueError, match=match):
            capture(tiny_llama, {1: sae}, **kw)
    right = dict(tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="right"))
    with pytest.raises(ValueError, match="left"), capture(tiny_llama, {1: sae}):
        tiny_llama.generate(**right, max_new_tokens=2, do_sample=False)
    pre = make_tiny_sae(32, D_SAE, seed=1, layer=1, site="resid_pre")
    with capture(tiny_llama, [pre]), pytest.raises(CorrsteerError, match="outside a forward"):
        tiny_llama.model.layers[1](torch.zeros(1, 2, 32))
