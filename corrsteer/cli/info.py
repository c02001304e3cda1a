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
    from corrsteer.sae.defaults import QUALITY, cached_sets
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
    sets = cached_sets()
    print(f"default SAE sets in the cache: {len(sets) or 'none yet (trained on first use of --sae default)'}")
    for s in sets:
        t = s["texts"]
        rows = t.get("dataset_rows", t.get("n_texts", 0) - t.get("model_samples", 0))
        mix = f"{t.get('model_samples', '?')} model samples + {rows} rows of {t.get('datasets') or 'no dataset'}"
        digests = ", ".join(f"{k.split('_sha256')[0]} {t[k][:12]}" for k in ("model_samples_sha256",
                                                                              "dataset_rows_sha256") if t.get(k))
        print(f"  {s['model']} / {s['settings_hash']}: {mix}" + (f" (sha256 {digests})" if digests else ""))
        for layer, m in s["layers"].items():
            ok = (m.get("explained_variance") or 0) >= QUALITY["min_explained_variance"] and \
                (m.get("dead_fraction") or 1) <= QUALITY["max_dead_fraction"]
            print(f"    layer {layer}: EV {_f(m.get('explained_variance'))}, L0 {_f(m.get('l0'), 1)}, "
                  f"dead {_f(m.get('dead_fraction'))}" + ("" if ok else "  <- fails the quality bar: delete the set"))


def _f(x: float | None, digits: int = 3) -> str:
    return "?" if x is None else f"{x:.{digits}f}"
