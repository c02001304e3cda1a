"""Target: ``method.collection.load_checkpoint`` (an npz of accumulator bytes + progress JSON + controls).

Expected: ``CorrsteerError`` naming the file. A checkpoint that loads has as many records as
its offset says.
"""

from __future__ import annotations

from harness import instrumented, main, write

with instrumented():
    from corrsteer.errors import CorrsteerError
    from corrsteer.method.collection import load_checkpoint


def TestOneInput(data: bytes) -> None:
    path = write("collection/checkpoint.npz", data)
    try:
        col, offset = load_checkpoint(path)
    except CorrsteerError as exc:
        assert str(path) in str(exc), exc
        return
    assert offset == col.n


if __name__ == "__main__":
    main(TestOneInput)
