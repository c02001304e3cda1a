"""Gemma Scope 1 (``params.npz``) and Gemma Scope 2 (``params.safetensors`` + ``config.json``) readers.

See :mod:`corrsteer.sae.formats` for the layouts; :func:`corrsteer.sae.formats.read_sae`
dispatches here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from corrsteer.errors import CorrsteerError
from corrsteer.sae.file_checks import (
    ARCHITECTURE_NAMES,
    SAEFiles,
    check_shapes,
    integer,
    layer_from_path,
    read_json,
    sae_files,
    take,
)
from corrsteer.sae.hook_names import parse_hook_name
from corrsteer.storage.safetensors import read_tensors

GS1_WEIGHTS = "params.npz"
GS2_WEIGHTS = "params.safetensors"
GS2_CFG = "config.json"


def read_gemma_scope_2(root: Path) -> SAEFiles:
    w_path, cfg_path = root / GS2_WEIGHTS, root / GS2_CFG
    cfg = read_json(cfg_path) if cfg_path.exists() else {}
    if cfg.get("type", "sae") != "sae" or cfg.get("affine_connection"):
        raise CorrsteerError(f"{cfg_path}: type={cfg.get('type')!r}, affine_connection="
                             f"{cfg.get('affine_connection')!r}; only plain SAEs (type 'sae') are "
                             f"supported, not transcoders or crosscoders")
    hook_in, hook_out = cfg.get("hf_hook_point_in"), cfg.get("hf_hook_point_out")
    if hook_out is not None and hook_out != hook_in:
        raise CorrsteerError(f"{cfg_path}: hf_hook_point_out {hook_out!r} differs from "
                             f"hf_hook_point_in {hook_in!r}; transcoders are not supported")
    if hook_in is not None:
        layer, site = parse_hook_name(hook_in, source=str(cfg_path))
    else:  # no config: Gemma Scope 2 folders are named "resid_post/layer_12_width_16k_l0_small"
        layer, site = layer_from_path(root), "resid_post"
        if "resid_post" not in str(root):
            raise CorrsteerError(f"{root}: no {GS2_CFG} with 'hf_hook_point_in' and the folder name "
                                 f"does not say the site; put the release's config.json beside "
                                 f"{GS2_WEIGHTS}")
    arch_raw = cfg.get("architecture", "jump_relu")
    if not isinstance(arch_raw, str) or arch_raw not in ARCHITECTURE_NAMES:
        raise CorrsteerError(f"{cfg_path}: field 'architecture' is {arch_raw!r}; expected 'jump_relu'")
    arch = ARCHITECTURE_NAMES[arch_raw]
    w = read_tensors(w_path)
    W_enc, W_dec, b_enc, b_dec = (take(w, n, w_path, alias=n.replace("W_", "w_"))
                                  for n in ("w_enc", "w_dec", "b_enc", "b_dec"))
    threshold = take(w, "threshold", w_path) if arch == "jumprelu" else None
    _, d_sae = check_shapes(W_enc, W_dec, b_enc, b_dec, threshold, w_path)
    if integer(cfg.get("width"), "width", cfg_path) not in (None, d_sae):
        raise CorrsteerError(f"{cfg_path}: field 'width' is {cfg['width']} but {GS2_WEIGHTS} has "
                             f"d_sae={d_sae}")
    meta = {"format": "gemma_scope_2", "hf_hook_point_in": hook_in, "l0": cfg.get("l0")}
    model_name = cfg.get("model_name")
    return sae_files(root, W_enc, b_enc, W_dec, b_dec, threshold, arch, integer(cfg.get("k"), "k", cfg_path), False,
                  layer, site, model_name if isinstance(model_name, str) else None, meta)


def read_gemma_scope_1(w_path: Path) -> SAEFiles:
    try:
        with open(w_path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            w = {name: np.asarray(z[name]) for name in z.files}
    except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError, OSError...
        raise CorrsteerError(f"{w_path}: cannot read the npz archive ({type(exc).__name__}: {exc}); "
                             f"the file is truncated or corrupt, download it again") from exc
    w = {("W_" + n[2:] if n.startswith("w_") else n): v for n, v in w.items()}
    W_enc, W_dec, b_enc, b_dec, threshold = (take(w, n, w_path) for n in
                                             ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"))
    check_shapes(W_enc, W_dec, b_enc, b_dec, threshold, w_path)
    text = str(w_path.resolve()).lower()
    if "embedding" in text or re.search(r"-att(?:[-/]|$)", text):
        raise CorrsteerError(f"{w_path}: Gemma Scope embedding and attention (hook_z) SAEs are not "
                             f"supported; use a residual-stream (-res) or MLP (-mlp) SAE")
    site = "mlp_out" if re.search(r"-mlp(?:[-/]|$)", text) else "resid_post"
    layer = layer_from_path(w_path.parent)
    return sae_files(w_path.parent, W_enc, b_enc, W_dec, b_dec, threshold, "jumprelu", None, False, layer, site,
                  None, {"format": "gemma_scope_1"})
