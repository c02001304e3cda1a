"""Write the seed corpora ``fuzz/corpus/<target>/`` from valid inputs made here (small files, a handful each).

    python fuzz/seed.py          # rewrites the seeds; run from the repository root

Each seed is one input of the target's ``TestOneInput`` (with the target's leading control
byte where it has one). The seeds are committed; libFuzzer's own finds stay in the run's temp
folder.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def accumulator() -> dict[str, bytes]:
    from corrsteer.core import CorrelationAccumulator

    out = {}
    for name, d_sae, kind in (("binary_d3", 3, "binary"), ("pearson_d2", 2, "pearson")):
        acc = CorrelationAccumulator(d_sae, kind=kind)
        rng = np.random.default_rng(d_sae)
        y = np.array([0, 1, 1, 0, 1], np.float64) if kind == "binary" else np.array([0.1, 0.9, 0.5, 0.2, 1.0])
        acc.update(np.abs(rng.normal(size=(5, d_sae))).astype(np.float32), y)
        out[name] = b"\x01" + acc.to_bytes()
    out["empty_d1"] = b"\x00" + CorrelationAccumulator(1).to_bytes()
    return out


def checkpoint() -> dict[str, bytes]:
    from corrsteer.core import CorrelationAccumulator

    acc = CorrelationAccumulator(2)
    acc.update(np.array([[1, 0], [0, 2]], np.float32), np.array([1.0, 0.0]))
    progress = {"offset": 2, "complete": True, "fingerprint": {"n": 2}, "hash": "x", "meta": {},
                "records": [{"id": "a", "reward": 1}, {"id": "b", "reward": 0}]}
    buf = io.BytesIO()
    np.savez(buf, progress=np.frombuffer(json.dumps(progress).encode(), np.uint8),
             layer_3=np.frombuffer(acc.to_bytes(), np.uint8))
    return {"two_samples": buf.getvalue()}


def _sae_weights(d_in: int = 3, d_sae: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"W_enc": rng.normal(size=(d_in, d_sae)).astype(np.float32),
            "W_dec": rng.normal(size=(d_sae, d_in)).astype(np.float32),
            "b_enc": np.zeros(d_sae, np.float32), "b_dec": np.zeros(d_in, np.float32),
            "threshold": np.full(d_sae, 0.1, np.float32)}


def safetensors() -> dict[str, bytes]:
    from safetensors.numpy import save

    w = _sae_weights()
    return {"sae_f32": save(w), "one_f16": save({"a": np.arange(4, dtype=np.float16)}),
            "metadata": save({"b": np.ones((2, 2), np.float32)}, metadata={"format": "np"})}


def sae_npz() -> dict[str, bytes]:
    out = {}
    for name, lower in (("upper", False), ("lower", True)):
        buf = io.BytesIO()
        np.savez(buf, **{(k.lower() if lower else k): v for k, v in _sae_weights().items()})
        out[name] = buf.getvalue()
    return out


def sae_config() -> dict[str, bytes]:
    saelens = {"architecture": "jumprelu", "d_in": 4, "d_sae": 6, "apply_b_dec_to_input": False,
               "hook_name": "blocks.3.hook_resid_post", "hook_layer": 3, "normalize_activations": "none",
               "model_name": "gemma-2-2b", "dtype": "float32"}
    topk = {"architecture": "topk", "d_in": 4, "d_sae": 6, "k": 2, "hook_name": "blocks.1.hook_resid_pre",
            "activation_fn_kwargs": {"k": 2}}
    gs2 = {"hf_hook_point_in": "model.layers.4.output", "hf_hook_point_out": "model.layers.4.output",
           "width": 6, "model_name": "google/gemma-3-270m-pt", "architecture": "jump_relu", "l0": 5,
           "affine_connection": False, "type": "sae"}
    return {"saelens_jumprelu": b"\x00" + json.dumps(saelens).encode(),
            "saelens_topk": b"\x02" + json.dumps(topk).encode(),
            "gemma_scope_2": b"\x01" + json.dumps(gs2).encode()}


def custom_task() -> dict[str, bytes]:
    rows = [{"text": f"review {i}", "label": "pos" if i % 2 else "neg",
             "split": ("train", "validation", "test", "train")[i % 4]} for i in range(12)]
    csv_text = "text,label,split\n" + "".join(f"{r['text']},{r['label']},{r['split']}\n" for r in rows)
    tsv_text = csv_text.replace(",", "\t")
    jsonl = "".join(json.dumps(r) + "\n" for r in rows)
    return {"csv": b"\x00" + csv_text.encode(), "tsv_options": b"\x05" + tsv_text.encode(),
            "jsonl_split": b"\x22" + jsonl.encode(), "json": b"\x03" + json.dumps(rows).encode()}


def gguf() -> dict[str, bytes]:
    import gguf as g

    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="corrsteer-seed-")
    path = Path(tmp.name) / "seed.gguf"
    w = g.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_string("general.name", "tiny")
    w.add_tensor("t", np.arange(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = path.read_bytes()
    tmp.cleanup()
    return {"tiny_llama": data}


def kernels() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    return {f"random_{i}": rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
            for i, n in enumerate((64, 160, 400))}


TARGETS = {"accumulator": accumulator, "checkpoint": checkpoint, "safetensors": safetensors, "sae_npz": sae_npz,
           "sae_config": sae_config, "custom_task": custom_task, "gguf": gguf, "kernels": kernels}


def main() -> None:
    for target, make in TARGETS.items():
        folder = HERE / "corpus" / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in make().items():
            (folder / name).write_bytes(data)
        print(f"{target}: {len(list(folder.iterdir()))} seeds")


if __name__ == "__main__":
    main()
