"""Dump every corrsteer.core._core kernel's output on fixed seeds, to compare two builds bit for bit.

    python csrc/tests/dump_outputs.py OUT.npz           # write the outputs
    python csrc/tests/dump_outputs.py OUT.npz --check REF.npz   # and compare with REF

Used to show that a change to csrc/ leaves the results for valid inputs unchanged
(the pipeline's byte-identical resume depends on it). Only the binding's original
entry points are called, so the script runs against the code before and after a
change. BLAS runs on one thread so that its results do not depend on the thread
count; the small-row path (<= 24 rows) and the BLAS path are both exercised.
"""

from __future__ import annotations

import sys

import numpy as np

from corrsteer.core.kernels import _core


def sae_tuple(rng, d_in, d_sae, arch, k=0, apply=True):
    W = (rng.standard_normal((d_in, d_sae)) / np.sqrt(d_in)).astype(np.float32)
    b_enc = (rng.standard_normal(d_sae) * 0.1).astype(np.float32)
    b_dec = (rng.standard_normal(d_in) * 0.1).astype(np.float32)
    thr = (np.abs(rng.standard_normal(d_sae)) * 0.2).astype(np.float32) if arch == 0 else None
    return (W, b_enc, b_dec if apply else None, thr, arch, k, apply)


def dump() -> dict[str, np.ndarray]:
    _core.set_num_threads(1)
    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(20240601)
    for arch, k in ((0, 0), (1, 0), (2, 7)):
        for apply in (False, True):
            sae = sae_tuple(rng, 48, 700, arch, k, apply)
            tag = f"a{arch}_b{int(apply)}"
            for n in (1, 5, 24, 25, 300):
                x = rng.standard_normal((n, 48)).astype(np.float32)
                out[f"encode_{tag}_{n}"] = _core.sae_encode(sae, x)
            x3 = rng.standard_normal((3, 40, 48)).astype(np.float32)
            mask = (rng.random((3, 40)) < 0.6).astype(np.uint8)
            mask[2] = 0
            for mode in (0, 1):
                out[f"pooled_{tag}_{mode}"] = _core.sae_encode_pooled(sae, x3, mask, mode)
                out[f"pooled_nomask_{tag}_{mode}"] = _core.sae_encode_pooled(sae, x3, None, mode)
                rows = rng.standard_normal((90, 48)).astype(np.float32)
                seq = rng.integers(-1, 4, 90).astype(np.int64)
                z, c = _core.sae_pool_rows(sae, rows, seq, 4, mode)
                out[f"poolrows_{tag}_{mode}"], out[f"poolrows_counts_{tag}_{mode}"] = z, c
                for buf in (1, 8, 64):
                    p = _core.Pooler(sae, 4, mode, buf)
                    for step in range(30):
                        p.push(sae, rows[step:step + 3], seq[step:step + 3])
                    z, c = p.result(sae)
                    out[f"pooler_{tag}_{mode}_{buf}"], out[f"pooler_counts_{tag}_{mode}_{buf}"] = z, c
    for kind in (0, 1):
        d = 1100
        acc, other = _core.Accumulator(d, kind), _core.Accumulator(d, kind)
        for b, n in enumerate((1, 7, 64, 200)):
            z = np.maximum(rng.standard_normal((n, d)) + 0.3, 0).astype(np.float32)
            z[:, 5] = 3.0  # a constant feature
            y = (rng.random(n) < 0.4).astype(np.float64) if kind == 0 else rng.random(n)
            (acc if b % 2 == 0 else other).update(z, y)
        out[f"acc_half_{kind}"] = np.frombuffer(acc.to_bytes(), np.uint8)
        acc.merge(other)
        out[f"acc_bytes_{kind}"] = np.frombuffer(acc.to_bytes(), np.uint8)
        out[f"acc_r_{kind}"] = acc.correlation()[0]
        out[f"acc_c_{kind}"] = acc.coefficient(False)
        out[f"acc_ca_{kind}"] = acc.coefficient(True)
        out[f"acc_f_{kind}"] = acc.frequency()
        for sign in (0, 1):
            i, r = acc.top(20, sign)
            out[f"acc_top_{kind}_{sign}_i"], out[f"acc_top_{kind}_{sign}_r"] = i, r
        back = _core.Accumulator.from_bytes(acc.to_bytes())
        out[f"acc_roundtrip_{kind}"] = np.frombuffer(back.to_bytes(), np.uint8)
        tall = _core.Accumulator(700, kind)  # batches taller than one 512 x 512 block copy
        trng = np.random.default_rng(7 + kind)  # its own stream: the arrays above keep theirs
        for n in (600, 3000):
            z = np.maximum(trng.standard_normal((n, 700)) + 0.2, 0).astype(np.float32)
            y = (trng.random(n) < 0.3).astype(np.float64) if kind == 0 else trng.random(n)
            tall.update(z, y)
        out[f"acc_tall_{kind}"] = np.frombuffer(tall.to_bytes(), np.uint8)
    W_dec = rng.standard_normal((300, 48)).astype(np.float32)
    feats = rng.integers(0, 300, 9).astype(np.int64)
    coefs = rng.standard_normal(9)
    v = _core.steering_vector(W_dec, feats, coefs)
    out["steer_v"] = v
    x = rng.standard_normal((10, 48)).astype(np.float32)
    _core.add_rows(x, v, (np.arange(10) % 3 == 0).astype(np.uint8))
    out["steer_x"] = x
    return out


def main(argv: list[str]) -> int:
    out = dump()
    np.savez(argv[1], **out)
    if len(argv) > 3 and argv[2] == "--check":
        ref = np.load(argv[3])
        bad = sorted(k for k in ref.files if k not in out or out[k].tobytes() != ref[k].tobytes()
                     or out[k].dtype != ref[k].dtype or out[k].shape != ref[k].shape)
        missing = sorted(set(out) - set(ref.files))
        print(f"{len(ref.files)} arrays compared, {len(bad)} differ, {len(missing)} new")
        for k in bad:
            print("  differs:", k)
        return 1 if bad else 0
    print(f"wrote {len(out)} arrays to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
