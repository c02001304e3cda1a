"""Target: SAE configs: a SAELens ``cfg.json`` (byte 0 even) or a Gemma Scope 2 ``config.json`` (odd),
beside valid weights, read by ``SAE.load``.

Expected: ``CorrsteerError`` naming the config file or folder. An SAE that loads has a config
whose fields are of the right types (``k`` an int for TopK, ``apply_b_dec_to_input`` a bool).
"""

from __future__ import annotations

import numpy as np
from harness import TMP, instrumented, main

with instrumented():
    import corrsteer
    from corrsteer.errors import CorrsteerError

D_IN, D_SAE = 4, 6


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"W_enc": rng.normal(size=(D_IN, D_SAE)).astype(np.float32),
            "W_dec": rng.normal(size=(D_SAE, D_IN)).astype(np.float32),
            "b_enc": np.zeros(D_SAE, np.float32), "b_dec": np.zeros(D_IN, np.float32),
            "threshold": np.full(D_SAE, 0.1, np.float32)}


def _folders() -> tuple:
    from safetensors.numpy import save_file

    saelens = TMP / "saelens"
    gs2 = TMP / "resid_post" / "layer_4_width_16k_l0_small"
    if not saelens.is_dir():
        saelens.mkdir(parents=True)
        gs2.mkdir(parents=True)
        save_file(_weights(), str(saelens / "sae_weights.safetensors"))
        save_file({k.lower(): v for k, v in _weights().items()}, str(gs2 / "params.safetensors"))
    return saelens, gs2


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    saelens, gs2 = _folders()
    root, name = (saelens, "cfg.json") if data[0] % 2 == 0 else (gs2, "config.json")
    (root / name).write_bytes(data[1:])
    try:
        sae = corrsteer.SAE.load(root)
    except CorrsteerError as exc:
        assert str(root) in str(exc), exc
        return
    cfg = sae.cfg
    assert isinstance(cfg.apply_b_dec_to_input, bool) and (cfg.k is None or type(cfg.k) is int)
    assert (cfg.d_in, cfg.d_sae) == (D_IN, D_SAE) and (cfg.layer is None or type(cfg.layer) is int)


if __name__ == "__main__":
    main(TestOneInput)
