"""``corrsteer info``: the build (BLAS, threads, compiler), the caches, the embedded models, the tasks."""

from __future__ import annotations

import argparse

from corrsteer.cli.common import add_global_flags

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``info`` to the ``corrsteer`` parser."""
    p = sub.add_parser("info", help="build, BLAS, cache locations and tasks")
    add_global_flags(p, top=False)
    p.set_defaults(handler=_info)


def _extra(dist: str, extra: str) -> str:
    """``sae-lens 6.54.12``, or how to install it (scripts/install_extras.sh keeps torch pinned)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{dist} {version(dist)}"
    except PackageNotFoundError:
        return f"{dist} not installed (bash scripts/install_extras.sh {extra})"


def _info(args: argparse.Namespace) -> None:
    import corrsteer
    from corrsteer.core import build_info
    from corrsteer.models.embedded import EMBEDDED, cache_dir
    from corrsteer.tasks import list_tasks

    print(f"corrsteer {corrsteer.__version__}")
    for key, value in build_info().items():
        print(f"  {key}: {value}")
    print(f"cache: {cache_dir()} (set CORRSTEER_CACHE to move it; gguf/ and hf/ hold the embedded models, "
          "the default SAEs are cached there too)")
    print("embedded models: " + ", ".join(sorted(EMBEDDED)))
    print("extras: " + ", ".join(_extra(dist, extra) for dist, extra in
                                 (("sae-lens", "saelens"), ("lm-eval", "lmeval"), ("llama-cpp-python", "llama"))))
    print("tasks: " + ", ".join(list_tasks()))
