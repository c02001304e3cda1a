"""Target: the GGUF header reader that ``load_model("model.gguf")`` goes through (``gguf.GGUFReader``).

The parser is the ``gguf`` package's, not corrsteer's: this target checks that a malformed file
cannot crash the process (ASan, a segfault) or hang it, and records which exception types
escape (``fuzz/README.md``); every ``Exception`` is accepted.
"""

from __future__ import annotations

from harness import main, write


def TestOneInput(data: bytes) -> None:
    from gguf import GGUFReader

    path = write("model.gguf", data)
    try:
        reader = GGUFReader(str(path))
        for tensor in reader.tensors:
            _ = tensor.data.shape
    except Exception:  # noqa: BLE001 - the contract here is only "no crash, no hang"
        return


if __name__ == "__main__":
    main(TestOneInput)
