"""The CUDA path (``--device cuda``): skipped where no GPU is present; run on a GPU machine with
``python -m pytest -q tests/test_cuda.py -m "slow or not slow"``.

On the GPU, capture pools with the torch backend on the device and only the pooled
``(n_seq, d_sae)`` rows cross to the C accumulator; steering vectors are moved to the
model's device once per context. What must hold: per-row steering equals one set on the
whole batch bit for bit (same device, same kernels); collection on the GPU agrees with
the CPU collection (same completions on the tiny model, r to float32 rounding); the
pipeline runs end to end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, build_tiny_sae
from test_collection import ParityTask

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture
def cuda_llama() -> Any:
    return build_tiny_model("llama").to("cuda")


def test_per_row_steering_on_cuda_equals_each_set_on_the_batch(cuda_llama: Any, tiny_tokenizer: Any) -> None:
    from test_steer_per_row import PROMPTS4, ROWS, SETS

    from corrsteer.hooks import steer

    batch = {k: v.cuda() for k, v in tiny_tokenizer(PROMPTS4, return_tensors="pt", padding=True).items()}
    kw = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with steer(cuda_llama, SETS, rows=ROWS) as st:
        got = cuda_llama.generate(**batch, **kw)
        for key, (table, _) in st._tables.items():
            assert table.device.type == "cpu"  # the master copy; the hook casts once per device
    for i, k in enumerate(ROWS):
        if k is None:
            ref = cuda_llama.generate(**batch, **kw)
        else:
            with steer(cuda_llama, SETS[k]):
                ref = cuda_llama.generate(**batch, **kw)
        assert torch.equal(got.sequences[i], ref.sequences[i])
        for a, b in zip(got.logits, ref.logits):
            assert torch.equal(a[i], b[i])


def test_collect_on_cuda_pools_on_the_device_and_agrees_with_the_cpu(cuda_llama: Any, tiny_tokenizer: Any) -> None:
    from corrsteer.hooks import capture
    from corrsteer.method.collection import collect

    task = ParityTask()
    saes = {l: build_tiny_sae(32, 48, "jumprelu", seed=30 + l, layer=l) for l in (0, 2)}
    samples = task.samples("train", 12)
    with capture(cuda_llama, saes) as cap:
        assert cap.backend == "torch"
    gpu = collect(cuda_llama, tiny_tokenizer, task, saes, samples, batch_size=4, progress=False)
    cpu = collect(build_tiny_model("llama"), tiny_tokenizer, task, saes, samples, batch_size=4, progress=False)
    assert [r["completion"] for r in gpu.records] == [r["completion"] for r in cpu.records]
    for l in saes:
        np.testing.assert_allclose(gpu.accumulators[l].correlation(), cpu.accumulators[l].correlation(),
                                   atol=1e-4)
        np.testing.assert_allclose(gpu.accumulators[l].coefficient(), cpu.accumulators[l].coefficient(),
                                   rtol=1e-4, atol=1e-5)


def test_pipeline_runs_end_to_end_on_cuda(tmp_path: Any, cuda_llama: Any, tiny_tokenizer: Any) -> None:
    from corrsteer.config import RunConfig
    from corrsteer.pipeline import run

    saes = {l: build_tiny_sae(32, 48, "relu", seed=20 + l, layer=l) for l in (0, 1, 2)}
    cfg = RunConfig(task="parity", model="tiny", sae="tiny", n_train=24, n_val=8, n_test=12, batch_size=4,
                    checkpoint_every=8, progress=False, n_boot=200, out=str(tmp_path), mode="pruned", scale=8.0,
                    device="cuda")
    results = run(cfg, model=cuda_llama, tokenizer=tiny_tokenizer, task=ParityTask(), saes=saes)
    assert results["baseline"]["n"] == results["steered"]["n"] == 12
    assert (tmp_path / "results.json").is_file() and (tmp_path / "selection" / "selection.json").is_file()


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(1500)  # the run may take up to 1200 s, past the suite's 900 s
def test_embedded_model_run_on_cuda(tmp_path: Any) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "corrsteer", "run", "--task", "arithmetic", "--model",
                           "gemma-3-270m", "--sae", "default", "--device", "cuda", "--n-train", "64", "--n-val", "16",
                           "--n-test", "32", "--batch-size", "16", "--mode", "pruned", "--no-progress", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "results.json").is_file()
