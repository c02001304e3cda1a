"""steer(..., rows=...): a different intervention set per batch row, on tiny random models.

The reference for row ``i`` of set ``k`` is the same batch steered with set ``k`` on every
row (``steer(model, sets[k])``), read at row ``i``; for a row without a set, the unsteered
batch. Same batch, same padding, same kernels: the per-row pass must give the same bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from test_hooks_steer import PROMPTS, _batch, _greedy, _no_hooks_left, _vec

from corrsteer.errors import CorrsteerError
from corrsteer.hooks import steer

PROMPTS4 = PROMPTS + ["Zebra"]
SETS = [{1: _vec(30, norm=8.0)}, [(0, _vec(31, norm=6.0)), (2, _vec(32, norm=6.0)), (2, _vec(33, norm=3.0))], {}]
ROWS = [1, None, 0, 1]  # row 1 unsteered; set 2 (empty) unused here


def _out(model: Any, batch: dict[str, torch.Tensor], **kw: Any) -> Any:
    return _greedy(model, batch, output_logits=True, output_hidden_states=True, return_dict_in_generate=True, **kw)


def _reference(model: Any, batch: dict[str, torch.Tensor], sets: list[Any], rows: list[int | None],
               **kw: Any) -> list[Any]:
    """Per row: the output of the batch steered by that row's set on every row (or unsteered)."""
    runs: dict[int | None, Any] = {}
    for k in set(rows):
        if k is None or not sets[k]:
            runs[k] = _out(model, batch, **kw)
        else:
            with steer(model, sets[k]):
                runs[k] = _out(model, batch, **kw)
    return [runs[k] for k in rows]


def test_per_row_equals_each_set_on_the_whole_batch_bit_for_bit(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer, PROMPTS4)
    with steer(tiny_model, SETS, rows=ROWS):
        got = _out(tiny_model, batch)
    want = _reference(tiny_model, batch, SETS, ROWS)
    for i, ref in enumerate(want):
        assert torch.equal(got.sequences[i], ref.sequences[i]), f"row {i} (set {ROWS[i]}): tokens differ"
        for step, (a, b) in enumerate(zip(got.logits, ref.logits)):
            assert torch.equal(a[i], b[i]), f"row {i} (set {ROWS[i]}): logits differ at step {step}"
        for step, (hs_a, hs_b) in enumerate(zip(got.hidden_states, ref.hidden_states)):
            for layer, (a, b) in enumerate(zip(hs_a, hs_b)):
                assert torch.equal(a[i], b[i]), f"row {i}: hidden state {layer} differs at step {step}"
    # the sets really differ, so a row given another row's set would be caught
    seqs = {tuple(got.sequences[i].tolist()) for i in (0, 2)} | {tuple(_greedy(tiny_model, batch)[0].tolist())}
    assert len(seqs) == 3, "the sets do not change the tokens differently; the test is too weak"
    assert _no_hooks_left(tiny_model)


def test_per_row_is_cache_and_padding_invariant(tiny_model: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer, PROMPTS4)
    width = batch["input_ids"].shape[1]
    with steer(tiny_model, SETS, rows=ROWS) as st:
        on = _greedy(tiny_model, batch, use_cache=True)
        off = _greedy(tiny_model, batch, use_cache=False)
        alone = []
        for i, p in enumerate(PROMPTS4):
            one = _batch(tiny_tokenizer, [p])
            st.assign([ROWS[i]])
            alone.append(_greedy(tiny_model, one)[0, one["input_ids"].shape[1]:])
    assert torch.equal(on, off), f"cache on {on.tolist()} != off {off.tolist()}"
    for i, single in enumerate(alone):
        n = len(single)
        assert torch.equal(on[i, width:width + n], single), f"row {i}: batch {on[i].tolist()} != alone {single}"


def test_reordered_rows_follow_their_sets(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    """Permuting the prompts and the assignment together permutes the output rows, nothing else."""
    perm = [3, 0, 2, 1]
    batch = _batch(tiny_tokenizer, PROMPTS4)
    pbatch = _batch(tiny_tokenizer, [PROMPTS4[j] for j in perm])
    with steer(tiny_llama, SETS, rows=ROWS) as st:
        a = _greedy(tiny_llama, batch)
        st.assign([ROWS[j] for j in perm])
        b = _greedy(tiny_llama, pbatch)
    assert torch.equal(a[perm], b)


def test_positions_all_per_row(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer, PROMPTS4)
    with torch.no_grad():
        with steer(tiny_llama, SETS, positions="all", rows=ROWS):
            got = tiny_llama(**batch, output_hidden_states=True).hidden_states
        want = {}
        for k in (0, 1):
            with steer(tiny_llama, SETS[k], positions="all"):
                want[k] = tiny_llama(**batch, output_hidden_states=True).hidden_states
        plain = tiny_llama(**batch, output_hidden_states=True).hidden_states
    for i, k in enumerate(ROWS):
        ref = plain if k is None else want[k]
        for layer in range(len(got)):
            assert torch.equal(got[layer][i], ref[layer][i]), f"row {i} layer {layer}"


def test_all_rows_unsteered_or_empty_sets_leave_logits_bit_identical(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer, PROMPTS4)
    base = _out(tiny_llama, batch)
    for sets, rows in (([{}, None], [0, 1, 0, None]), (SETS, [None, -1, 2, None])):
        with steer(tiny_llama, sets, rows=rows):
            got = _out(tiny_llama, batch)
        assert torch.equal(got.sequences, base.sequences)
        for a, b in zip(got.logits, base.logits):
            assert torch.equal(a, b)


def test_row_count_mismatch_and_bad_assignments_raise(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    batch = _batch(tiny_tokenizer, PROMPTS4)
    with pytest.raises(CorrsteerError, match="assigns 3 rows but the model was called with 4 rows"), \
            steer(tiny_llama, SETS, rows=[0, 1, 0]):
        _greedy(tiny_llama, batch)
    assert _no_hooks_left(tiny_llama)
    with pytest.raises(ValueError, match=r"rows\[1\] = 3: each row takes a set index in 0 … 2"):
        steer(tiny_llama, SETS, rows=[0, 3])
    with pytest.raises(ValueError, match=r"rows\[0\] = True"):
        steer(tiny_llama, SETS, rows=[True])
    with pytest.raises(TypeError, match="list of intervention sets"):
        steer(tiny_llama, {0: np.zeros(32, np.float32)}, rows=[0])
    with pytest.raises(ValueError, match="set 1 at layer 9"):
        steer(tiny_llama, [{0: np.zeros(32, np.float32)}, {9: np.zeros(32, np.float32)}], rows=[0])
    with pytest.raises(ValueError, match="assign"):
        steer(tiny_llama, {0: np.zeros(32, np.float32)}).assign([0])
    assert _no_hooks_left(tiny_llama)


def test_per_row_nests_with_a_plain_steering(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    """An outer steer() on every row plus a per-row one add up, like two plain ones do."""
    batch = _batch(tiny_tokenizer, PROMPTS4)
    outer = {2: _vec(40, norm=2.0)}
    with torch.no_grad():
        with steer(tiny_llama, outer), steer(tiny_llama, SETS, rows=[0, 0, 0, 0]):
            got = tiny_llama(**batch, output_hidden_states=True).hidden_states
        with steer(tiny_llama, outer), steer(tiny_llama, SETS[0]):
            want = tiny_llama(**batch, output_hidden_states=True).hidden_states
    for a, b in zip(got, want):
        assert torch.equal(a, b)
