"""Target: ``storage.safetensors.read_tensors`` (through the ``safetensors`` package's reader).

Expected: ``CorrsteerError`` naming the file. What loads is a dict of NumPy arrays whose byte
sizes add up to at most the file's body.
"""

from __future__ import annotations

from harness import instrumented, main, write

with instrumented():
    from corrsteer.errors import CorrsteerError
    from corrsteer.storage.safetensors import read_tensors


def TestOneInput(data: bytes) -> None:
    path = write("weights.safetensors", data)
    try:
        tensors = read_tensors(path)
    except CorrsteerError as exc:
        assert str(path) in str(exc), exc
        return
    assert sum(t.nbytes for t in tensors.values()) <= 2 * len(data)  # bfloat16 widens to float32


if __name__ == "__main__":
    main(TestOneInput)
