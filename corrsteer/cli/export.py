"""``corrsteer export``: a selection as a file other tools read (a llama.cpp control vector).

Example::

    corrsteer export --selection runs/arithmetic-all-seed0/selection --format gguf -o steer.gguf
    llama-cli -m gemma-3-270m-q4_k_m.gguf --control-vector steer.gguf

The vectors are written at the selection's scale (or ``--scale``). llama.cpp adds a control
vector at every position, the prompt included, where corrsteer steers only the generation
positions; ``corrsteer eval --selection DIR --positions all`` measures what that changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from corrsteer.cli.common import add_global_flags

__all__ = ["FORMATS", "model_hint", "register"]

FORMATS = ("gguf",)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``corrsteer`` parser."""
    text = "write a selection as a llama.cpp control vector (GGUF)"
    p = sub.add_parser("export", help=text, description=text)
    add_global_flags(p, top=False)
    p.add_argument("--selection", required=True, help="selection folder (selection.json + vectors.safetensors)")
    p.add_argument("--format", default="gguf", choices=FORMATS, help="output format (gguf: llama.cpp control vector)")
    p.add_argument("-o", "--output", required=True, help="the file to write, e.g. steer.gguf")
    p.add_argument("--scale", type=float, default=None, help="factor on every coefficient (default: the selection's)")
    p.add_argument("--model-hint", default=None,
                   help="llama.cpp architecture name written as controlvector.model_hint (default: from the "
                        "selection's model, e.g. gemma3 for gemma-3-270m)")
    p.set_defaults(handler=_export)


def model_hint(model: str | None) -> str | None:
    """llama.cpp's architecture name of an embedded model (``gemma-3-270m`` -> ``gemma3``), else None."""
    from corrsteer.models.embedded import EMBEDDED

    spec = EMBEDDED.get(str(model))
    return spec.arch if spec is not None else None


def _export(args: argparse.Namespace) -> None:
    from corrsteer.method.features import Selection

    sel = Selection.load(args.selection)
    model = sel.meta.get("model")
    hint = args.model_hint or model_hint(model)
    if not hint:
        raise ValueError(f"the selection's model {model!r} is not an embedded model, so its llama.cpp architecture "
                         "name is unknown; pass --model-hint (e.g. llama, gemma2, gemma3, qwen2)")
    scale = sel.scale if args.scale is None else args.scale
    out = Path(args.output)
    if out.parent and not out.parent.is_dir():
        raise ValueError(f"the folder of --output {str(out)!r} does not exist")
    sel.to_gguf(out, hint, scale=scale)
    from corrsteer.storage.control_vector import read_control_vector

    cv = read_control_vector(out)
    norms = ", ".join(f"direction.{n} (|v| {float((v.astype('float64') ** 2).sum() ** 0.5):.3g})"
                      for n, v in cv.directions.items())
    print(f"wrote {out}: llama.cpp control vector, model hint {hint}, d_model {cv.d_model}, scale {scale:g}")
    print(f"  {norms}")
    moved = [f"layer {l} ({s}) -> direction.{l - 1}" for l, s in sorted(sel.sites.items()) if s == "resid_pre"]
    if moved:
        print(f"  resid_pre sites are the previous block's output: {', '.join(moved)}")
    print("note: llama.cpp adds a control vector at EVERY position, the prompt included; corrsteer steered only "
          "the generation positions. Measure the difference before deploying:")
    print(f"  corrsteer eval --selection {args.selection} --positions all --task <task> --out <folder>")
    print(f"use: llama-cli -m <model>.gguf --control-vector {out}")
