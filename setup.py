"""Build corrsteer.core._core from csrc/*.c and csrc/python/*.c (csrc/tests are not part of it).

BLAS, chosen by the environment variable CORRSTEER_BLAS:
  scipy-openblas (default)  OpenBLAS from the scipy-openblas32 wheel (a build and run
                            dependency, so no system package is needed); rpaths to
                            $ORIGIN/../../scipy_openblas32/lib (installed layout) and to
                            the build-time lib dir (in-place builds) are recorded, and
                            corrsteer.core.kernels also preloads the library.
  system                    a system OpenBLAS: <cblas.h> and -lopenblas.
  none                      a naive C99 sgemm (slow; for portability and tests).
"""

from __future__ import annotations

import os
import sysconfig

import numpy as np
from setuptools import Extension, setup

# -ffp-contract=off: the compiler may not fuse a*b+c into an FMA, so the AVX-512, AVX2
# and plain builds of the accumulator's update give the same bits (GCC implies it with
# -std=c99, Clang does not). Keep it in step with csrc/Makefile.
CFLAGS = ["-std=c99", "-O3", "-ffp-contract=off", "-Wall", "-Wextra",
          "-Wno-missing-field-initializers"]
# the C library (csrc/*.c, no Python in it), then the binding (csrc/python/*.c)
CORE = ("status", "cpu", "blas", "sgemm_small", "sae", "pool", "corr", "corr_io", "steer")
BINDING = ("binding", "py_args", "py_pooler", "py_accumulator")
SOURCES = ([os.path.join("csrc", f"{name}.c") for name in CORE]
           + [os.path.join("csrc", "python", f"{name}.c") for name in BINDING])


def blas_config(choice: str) -> dict:
    """Compiler and linker settings for one BLAS choice."""
    if choice == "none":
        return {"define_macros": [("CS_BLAS_NONE", "1")]}
    if choice == "system":
        return {"libraries": ["openblas"]}
    if choice == "scipy-openblas":
        import scipy_openblas32

        lib_dir = scipy_openblas32.get_lib_dir()
        return {"define_macros": [("CS_BLAS_SCIPY", "1")],
                "include_dirs": [scipy_openblas32.get_include_dir()],
                "library_dirs": [lib_dir],
                "libraries": [scipy_openblas32.get_library()],
                # installed side by side in site-packages: found relative to _core.so even
                # when the (isolated) build environment that held lib_dir is gone
                "extra_link_args": ["-Wl,-rpath,$ORIGIN/../../scipy_openblas32/lib"],
                "runtime_library_dirs": [lib_dir]}
    raise SystemExit(f"CORRSTEER_BLAS must be scipy-openblas, system or none, got {choice!r}")


def extension() -> Extension:
    choice = os.environ.get("CORRSTEER_BLAS", "scipy-openblas")
    cfg = blas_config(choice)
    # setuptools compiles with $CC when it is set, else with Python's own compiler
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    macros = cfg.pop("define_macros", []) + [
        ("CS_COMPILER", '"' + compiler.split()[0].replace('"', "") + '"'),
        ("CS_CFLAGS", '"' + " ".join(CFLAGS) + '"'),
    ]
    include_dirs = ["csrc", np.get_include()] + cfg.pop("include_dirs", [])
    return Extension("corrsteer.core._core", sources=SOURCES, include_dirs=include_dirs,
                     define_macros=macros, extra_compile_args=CFLAGS,
                     depends=["csrc/corrsteer.h", "csrc/internal.h", "csrc/python/binding.h"],
                     **cfg)


setup(ext_modules=[extension()])
