"""How the C extension was built: the flags that its bit-identical results rely on."""

from __future__ import annotations

from corrsteer.core.kernels import _core


def test_extension_is_built_without_fp_contraction():
    # Without -ffp-contract=off Clang fuses a*b+c into FMAs in the AVX-512 build of the
    # accumulator update only, and its bytes then differ from the AVX2 and plain builds.
    flags = _core.build_info()["flags"].split()
    assert "-ffp-contract=off" in flags, flags
