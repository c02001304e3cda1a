"""Target: a Gemma Scope 1 ``params.npz`` read by ``SAE.load`` (npz archive + tensor checks + the SAE).

Expected: ``CorrsteerError`` naming the file or folder. An SAE that loads encodes a row.
"""

from __future__ import annotations

import numpy as np
from harness import instrumented, main, write

with instrumented():
    import corrsteer
    from corrsteer.errors import CorrsteerError


def TestOneInput(data: bytes) -> None:
    path = write("gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_5/params.npz", data)
    try:
        sae = corrsteer.SAE.load(path.parent)
    except CorrsteerError as exc:
        assert "average_l0_5" in str(exc), exc
        return
    f = sae.encode(np.zeros((1, sae.d_in), np.float32))
    assert f.shape == (1, sae.d_sae) and np.all(np.isfinite(f))


if __name__ == "__main__":
    main(TestOneInput)
