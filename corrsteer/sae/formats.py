"""Reading and writing SAE weight files: Gemma Scope 1 and 2, SAELens, and our own saves.

Layouts (``d_in`` = the model width, ``d_sae`` = the number of latents):

=================  ==========================================  ===============================
format             files                                       weights
=================  ==========================================  ===============================
Gemma Scope 1      ``params.npz``                              ``W_enc (d_in, d_sae)``,
                   (``layer_12/width_16k/average_l0_82/``)     ``W_dec (d_sae, d_in)``, ``b_enc``,
                                                               ``b_dec``, ``threshold``
Gemma Scope 2      ``params.safetensors`` + ``config.json``    same, lower-case ``w_enc``/``w_dec``;
                                                               config: ``hf_hook_point_in``
                                                               (``model.layers.{L}.output``),
                                                               ``hf_hook_point_out``, ``width``,
                                                               ``l0``, ``architecture``
                                                               (``jump_relu``), ``type``,
                                                               ``affine_connection``, ``model_name``
SAELens / ours     ``cfg.json`` + ``sae_weights.safetensors``  ``W_enc``, ``W_dec``, ``b_enc``,
                                                               ``b_dec``, optional ``threshold`` or
                                                               ``log_threshold``
=================  ==========================================  ===============================

Every option that would change the SAE's arithmetic is either folded exactly into the
weights (SAELens ``rescale_acts_by_decoder_norm``, a ``scaling_factor`` tensor) or
refused with an error naming the file and the field (``normalize_activations`` other
than ``"none"``, ``hook_head_index``, ``hook_z`` reshaping, transcoders). Nothing here
imports torch.

Config values are read strictly: a boolean must be a JSON boolean (``"false"`` is refused,
not read as true), an integer must be an integer (``k: 2.9`` is refused, not truncated),
and two fields that say different things (a ``hook_name`` of layer 3 beside
``hook_layer: 7``) are refused; every error names the file and the field.

This module reads and writes files only: :func:`read_sae` returns the checked config
fields and weights, and :class:`corrsteer.SAE` (``SAE.load``, ``sae.save``) builds the
object. Hook-name parsing is :mod:`corrsteer.sae.hook_names`, safetensors I/O
:mod:`corrsteer.storage.safetensors`, downloading :mod:`corrsteer.sae.hub`.

Example:
    >>> files = read_sae("gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82")  # doctest: +SKIP
    >>> files.cfg["layer"], files.cfg["site"], files.weights["W_enc"].shape         # doctest: +SKIP
    (12, 'resid_post', (2304, 16384))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer.errors import CorrsteerError
from corrsteer.sae.file_checks import (
    ARCHITECTURE_NAMES,
    SAEFiles,
    check_shapes,
    flag,
    integer,
    read_json,
    sae_files,
    take,
    vector,
)
from corrsteer.sae.gemma_scope import GS1_WEIGHTS, GS2_CFG, GS2_WEIGHTS, read_gemma_scope_1, read_gemma_scope_2
from corrsteer.sae.hook_names import parse_hook_name
from corrsteer.storage.atomic import replace_dir, write_json
from corrsteer.storage.jsonable import to_jsonable
from corrsteer.storage.safetensors import read_tensors, write_tensors

__all__ = ["GS1_WEIGHTS", "GS2_CFG", "GS2_WEIGHTS", "SAELENS_CFG", "SAELENS_WEIGHTS", "SAEFiles", "parse_saelens",
           "read_sae", "write_saelens"]

logger = logging.getLogger(__name__)

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"



def read_sae(path: str | os.PathLike) -> SAEFiles:
    """Read an SAE from a Gemma Scope 1/2, SAELens or corrsteer folder (or a file inside it).

    Args:
        path: a folder holding one of the layouts in the module docstring, or the
            weights/config file inside it.

    Returns:
        :class:`SAEFiles`; ``cfg`` holds ``d_in``, ``d_sae``, ``architecture``, ``k``,
        ``apply_b_dec_to_input``, ``hook_name``, ``layer``, ``site``, ``model_name``.

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no known layout.
        CorrsteerError: the files are malformed: a missing key, a wrong shape or type, a
            truncated file, an unknown architecture, an unsupported option, two fields
            that disagree (the message names the file and the field).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"SAE path {str(p)!r} does not exist")
    root = p if p.is_dir() else p.parent
    names = {p.name} if p.is_file() else {q.name for q in p.iterdir()}
    if SAELENS_WEIGHTS in names or SAELENS_CFG in names:
        found = _read_saelens(root)
    elif GS2_WEIGHTS in names or GS2_CFG in names:
        found = read_gemma_scope_2(root)
    elif GS1_WEIGHTS in names:
        found = read_gemma_scope_1(root / GS1_WEIGHTS)
    else:
        raise FileNotFoundError(
            f"no SAE found at {str(p)!r}: expected {SAELENS_CFG} + {SAELENS_WEIGHTS} (SAELens, "
            f"corrsteer), {GS2_WEIGHTS} + {GS2_CFG} (Gemma Scope 2) or {GS1_WEIGHTS} (Gemma Scope 1)")
    found.meta["source"] = str(root)
    return found


def write_saelens(path: str | os.PathLike, cfg: dict[str, Any], weights: dict[str, np.ndarray],
                  meta: dict[str, Any] | None = None, *, overwrite: bool = True) -> Path:
    """Write an SAE in the SAELens layout (``cfg.json`` + ``sae_weights.safetensors``), atomically.

    The config carries the SAELens fields (``architecture``, ``d_in``, ``d_sae``, ``k``,
    ``hook_name``, ``hook_layer``, ``model_name``, ``apply_b_dec_to_input``,
    ``normalize_activations="none"``, ``dtype``) so SAELens can read it too, and ``meta``
    (training metrics and settings) under the ``"corrsteer"`` key. The folder is built
    beside its final place and renamed in one step (:func:`corrsteer.storage.atomic.replace_dir`).

    Args:
        path: the folder to create (or replace, when ``overwrite``).
        cfg: the fields of ``corrsteer.SAEConfig``.
        weights: ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec`` and optionally ``threshold``.
        meta: free-form metadata stored under ``"corrsteer"``.
        overwrite: replace an existing folder; otherwise raise ``FileExistsError``.

    Returns:
        The folder written.
    """
    arch = {"relu": "standard", "jumprelu": "jumprelu", "topk": "topk"}[cfg["architecture"]]
    doc: dict[str, Any] = {
        "architecture": arch, "d_in": int(cfg["d_in"]), "d_sae": int(cfg["d_sae"]), "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": bool(cfg["apply_b_dec_to_input"]),
        "normalize_activations": "none", "reshape_activations": "none",
        "hook_name": cfg.get("hook_name"), "hook_layer": cfg.get("layer"), "hook_head_index": None,
        "model_name": cfg.get("model_name"),
        "activation_fn_str": "topk" if arch == "topk" else "relu",
        "corrsteer": to_jsonable(dict(meta or {}), fallback=str),
    }
    if arch == "topk":
        doc["k"] = int(cfg["k"])
        doc["activation_fn_kwargs"] = {"k": int(cfg["k"])}
    with replace_dir(path, overwrite=overwrite) as tmp:
        write_tensors(tmp / SAELENS_WEIGHTS, weights)
        write_json(tmp / SAELENS_CFG, doc, indent=2, sort_keys=True)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# per-format readers


def _read_saelens(root: Path) -> SAEFiles:
    cfg_path, w_path = root / SAELENS_CFG, root / SAELENS_WEIGHTS
    return parse_saelens(read_json(cfg_path), lambda: read_tensors(w_path), root, cfg_path, w_path)


def parse_saelens(cfg: dict[str, Any], read_weights: Callable[[], dict[str, np.ndarray]], root: Path,
                  cfg_path: Path, w_path: Path) -> SAEFiles:
    """Check a SAELens config and its tensors; the SAE they form (every option folded or refused).

    Shared by the ``cfg.json`` reader and :func:`corrsteer.sae.saelens.from_sae_lens` (a live
    ``sae_lens.SAE``). ``read_weights`` is called once the config has passed; ``cfg_path``
    and ``w_path`` name the sources in error messages.
    """
    meta_cfg = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}

    def get(*names: str) -> Any:
        for n in names:
            if n in cfg and cfg[n] is not None:
                return cfg[n]
            if n in meta_cfg and meta_cfg[n] is not None:
                return meta_cfg[n]
        return None

    arch_raw = get("architecture") or "standard"
    act_fn = get("activation_fn", "activation_fn_str")
    kwargs = get("activation_fn_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CorrsteerError(f"{cfg_path}: field 'activation_fn_kwargs' is {kwargs!r}; it must be an object")
    k = integer(get("k") if get("k") is not None else kwargs.get("k"), "k", cfg_path)
    if arch_raw == "standard" and act_fn == "topk":
        arch_raw = "topk"
    if not isinstance(arch_raw, str) or arch_raw not in ARCHITECTURE_NAMES:
        raise CorrsteerError(f"{cfg_path}: field 'architecture' is {arch_raw!r}; corrsteer supports "
                             f"'standard' (ReLU), 'jumprelu' and 'topk'")
    arch = ARCHITECTURE_NAMES[arch_raw]
    if arch == "relu" and act_fn not in (None, "relu"):
        raise CorrsteerError(f"{cfg_path}: field 'activation_fn' is {act_fn!r}; only 'relu' and "
                             f"'topk' are supported")
    norm = get("normalize_activations")
    if norm not in (None, False, "none"):
        raise CorrsteerError(
            f"{cfg_path}: field 'normalize_activations' is {norm!r}; the SAE expects rescaled inputs "
            f"that corrsteer does not reproduce. Fold the scaling factor into the weights "
            f"(SAELens: sae.fold_activation_norm_scaling_factor) and set it to 'none'")
    if get("hook_head_index", "hook_point_head_index") is not None:
        raise CorrsteerError(f"{cfg_path}: field 'hook_head_index' is set; per-head SAEs are not "
                             f"supported (corrsteer reads whole residual-stream sites)")
    if get("reshape_activations") not in (None, "none"):
        raise CorrsteerError(f"{cfg_path}: field 'reshape_activations' is "
                             f"{get('reshape_activations')!r}; only 'none' is supported")
    if get("hook_name_out") is not None or "transcoder" in str(arch_raw):
        raise CorrsteerError(f"{cfg_path}: transcoders (hook_name_out) are not supported")
    # SAELens before 6.0 defaulted apply_b_dec_to_input to True when absent.
    apply_b_dec = flag(get("apply_b_dec_to_input"), "apply_b_dec_to_input", cfg_path, default=True)

    w = read_weights()
    W_enc, W_dec, b_enc, b_dec = (take(w, n, w_path) for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
    threshold = None
    if arch == "jumprelu":
        if "threshold" in w:
            threshold = w["threshold"]
        elif "log_threshold" in w:
            threshold = np.exp(w["log_threshold"].astype(np.float64)).astype(np.float32)
        else:
            raise CorrsteerError(f"{w_path}: JumpReLU SAE has neither 'threshold' nor "
                                 f"'log_threshold'")
    d_in, d_sae = check_shapes(W_enc, W_dec, b_enc, b_dec, threshold, w_path)
    for name, want in (("d_in", d_in), ("d_sae", d_sae)):
        got = integer(get(name), name, cfg_path)
        if got is not None and got != want:
            raise CorrsteerError(f"{cfg_path}: field {name!r} is {got} but {w_path.name} holds "
                                 f"{name}={want}")
    scale = w.get("scaling_factor", w.get("finetuning_scaling_factor"))
    if scale is not None:  # decode(f * s) == decode'(f) with W_dec' = diag(s) W_dec: exact fold
        W_dec = W_dec * vector(scale, d_sae, "scaling_factor", w_path)[:, None]
    if arch == "topk":
        if k is None:
            raise CorrsteerError(f"{cfg_path}: TopK SAE without field 'k' "
                                 f"(or 'activation_fn_kwargs.k')")
        if flag(get("rescale_acts_by_decoder_norm"), "rescale_acts_by_decoder_norm", cfg_path, default=False):
            # pre' = pre * |W_dec_i|, decode uses W_dec_i / |W_dec_i|: fold both into the weights.
            n = np.linalg.norm(W_dec.astype(np.float64), axis=1)
            W_enc = W_enc * n[None, :].astype(np.float32)
            b_enc = b_enc * n.astype(np.float32)
            W_dec = (W_dec / np.where(n > 0, n, 1.0)[:, None]).astype(np.float32)
    hook = get("hook_name", "hook_point")
    if hook is not None and not isinstance(hook, str):
        raise CorrsteerError(f"{cfg_path}: field 'hook_name' is {hook!r}; it must be a string")
    layer, site = parse_hook_name(hook, source=str(cfg_path)) if hook else (None, "resid_post")
    hook_layer = integer(get("hook_layer"), "hook_layer", cfg_path)
    if layer is not None and hook_layer is not None and hook_layer != layer:
        raise CorrsteerError(f"{cfg_path}: field 'hook_name' {hook!r} names layer {layer} but field 'hook_layer' "
                             f"is {hook_layer}; fix one of them")
    if layer is None:
        layer = hook_layer
    meta = {"format": "saelens"}
    if isinstance(cfg.get("corrsteer"), dict):
        meta.update(cfg["corrsteer"])
        meta["format"] = "corrsteer"
    model_name = get("model_name")
    return sae_files(root, W_enc, b_enc, W_dec, b_dec, threshold, arch, k, apply_b_dec, layer, site,
                     model_name if isinstance(model_name, str) else None, meta)
