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

This module holds :func:`load_sae`, :func:`save_sae`, the three format readers and their
shared checks. Hook-name parsing (``parse_hook_name``, ``hook_name_for``) is
:mod:`corrsteer.sae.hook_names`, the safetensors reader and writer
(``read_safetensors``, ``write_safetensors``) :mod:`corrsteer.sae.safetensors_io` and
downloading from the Hugging Face hub (``load_sae_from_hub``) :mod:`corrsteer.sae.hub`;
all of them are still importable from here.

Example:
    >>> from corrsteer.sae.formats import load_sae, save_sae     # doctest: +SKIP
    >>> sae = load_sae("gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82")
    >>> sae.layer, sae.site
    (12, 'resid_post')
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from corrsteer.errors import CorrsteerError
from corrsteer.sae.hook_names import SITES, hook_name_for, parse_hook_name  # noqa: F401 - SITES re-exported
from corrsteer.sae.safetensors_io import read_safetensors, write_safetensors

if TYPE_CHECKING:  # at run time: __getattr__ below (corrsteer.sae.hub imports this module)
    from corrsteer.sae.hub import load_sae_from_hub

logger = logging.getLogger(__name__)

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
GS1_WEIGHTS = "params.npz"
GS2_WEIGHTS = "params.safetensors"
GS2_CFG = "config.json"

# SAELens `architecture` -> ours. "standard" is the plain ReLU SAE.
_ARCHITECTURES = {"standard": "relu", "relu": "relu", "jumprelu": "jumprelu",
                  "jump_relu": "jumprelu", "topk": "topk"}


def load_sae(path: str | os.PathLike, *, device: str | None = None, d_model: int | None = None,
             layer: int | None = None) -> Any:
    """Load an SAE from a Gemma Scope 1/2, SAELens or corrsteer directory (or one of its files).

    Args:
        path: a directory holding one of the layouts in the module docstring, or the
            weights/config file inside it.
        device: ``None`` or ``"cpu"``: the SAE's arrays are NumPy; hooks move what
            they need to the model's device. Any other value is recorded in
            ``sae.meta["device"]`` for the caller.
        d_model: the width of the model the SAE will be used with; a different
            ``d_in`` raises ``ValueError``.
        layer: the decoder layer the SAE reads, for files whose path and config do
            not say (Gemma Scope 1 outside its ``layer_N/`` folders). If the file
            names a layer too, they must agree.

    Returns:
        ``corrsteer.SAE`` with ``hook_name``, ``layer``, ``site`` and ``meta`` set
        (``meta["format"]``, ``meta["source"]`` and the config's model name).

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no known layout.
        CorrsteerError: the files are malformed: a missing key, a wrong shape, a
            truncated file, an unknown architecture, an unsupported option.
        ValueError: ``d_model`` or ``layer`` disagree with the file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"SAE path {str(p)!r} does not exist")
    root = p if p.is_dir() else p.parent
    names = {p.name} if p.is_file() else {q.name for q in p.iterdir()}
    if SAELENS_WEIGHTS in names or SAELENS_CFG in names:
        sae = _load_saelens(root)
    elif GS2_WEIGHTS in names or GS2_CFG in names:
        sae = _load_gemma_scope_2(root)
    elif GS1_WEIGHTS in names:
        sae = _load_gemma_scope_1(root / GS1_WEIGHTS)
    else:
        raise FileNotFoundError(
            f"no SAE found at {str(p)!r}: expected {SAELENS_CFG} + {SAELENS_WEIGHTS} (SAELens, "
            f"corrsteer), {GS2_WEIGHTS} + {GS2_CFG} (Gemma Scope 2) or {GS1_WEIGHTS} (Gemma Scope 1)")
    if layer is not None:
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or layer < 0:
            raise ValueError(f"layer must be a non-negative int, got {layer!r}")
        if sae.layer is not None and sae.layer != layer:
            raise ValueError(f"layer={layer} but {str(root)!r} is an SAE for layer {sae.layer} "
                             f"({sae.hook_name}); drop the layer= argument or load the right file")
        sae.layer = int(layer)
        sae.hook_name = hook_name_for(sae.layer, sae.site)
    if d_model is not None and sae.d_in != d_model:
        raise ValueError(f"SAE {str(root)!r} has d_in={sae.d_in} (field W_enc) but the model has "
                         f"d_model={d_model}; load the SAE trained for this model")
    if device not in (None, "cpu"):
        sae.meta["device"] = str(device)
    return sae


def save_sae(sae: Any, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Save an SAE in the SAELens layout (``cfg.json`` + ``sae_weights.safetensors``), atomically.

    The config carries the SAELens fields (``architecture``, ``d_in``, ``d_sae``, ``k``,
    ``hook_name``, ``hook_layer``, ``model_name``, ``apply_b_dec_to_input``,
    ``normalize_activations="none"``, ``dtype``) so SAELens can read it too, and our
    ``sae.meta`` (training metrics and settings) under the ``"corrsteer"`` key.
    The directory is written next to its final place and renamed in one step, so a
    crash never leaves a half-written SAE behind.

    Args:
        sae: a ``corrsteer.SAE``.
        path: the directory to create (or replace, when ``overwrite``).
        overwrite: replace an existing directory; otherwise raise ``FileExistsError``.

    Returns:
        The directory written.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{str(dest)!r} exists; pass overwrite=True to replace it")
    arch = {"relu": "standard", "jumprelu": "jumprelu", "topk": "topk"}[sae.architecture]
    cfg: dict[str, Any] = {
        "architecture": arch, "d_in": int(sae.d_in), "d_sae": int(sae.d_sae), "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": bool(sae.apply_b_dec_to_input),
        "normalize_activations": "none", "reshape_activations": "none",
        "hook_name": sae.hook_name, "hook_layer": sae.layer, "hook_head_index": None,
        "model_name": sae.meta.get("model_name"),
        "activation_fn_str": "topk" if arch == "topk" else "relu",
        "corrsteer": _jsonable(dict(sae.meta)),
    }
    if arch == "topk":
        cfg["k"] = int(sae.k)
        cfg["activation_fn_kwargs"] = {"k": int(sae.k)}
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        write_safetensors(tmp / SAELENS_WEIGHTS, tensors)
        (tmp / SAELENS_CFG).write_text(json.dumps(cfg, indent=2, sort_keys=True))
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------------
# per-format readers


def _load_saelens(root: Path) -> Any:
    cfg_path, w_path = root / SAELENS_CFG, root / SAELENS_WEIGHTS
    cfg = _read_json(cfg_path)
    meta_cfg = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}

    def field(*names: str) -> Any:
        for n in names:
            if n in cfg and cfg[n] is not None:
                return cfg[n]
            if n in meta_cfg and meta_cfg[n] is not None:
                return meta_cfg[n]
        return None

    arch_raw = field("architecture") or "standard"
    act_fn = field("activation_fn", "activation_fn_str")
    kwargs = field("activation_fn_kwargs") or {}
    k = field("k") if field("k") is not None else kwargs.get("k")
    if arch_raw == "standard" and act_fn == "topk":
        arch_raw = "topk"
    if arch_raw not in _ARCHITECTURES:
        raise CorrsteerError(f"{cfg_path}: field 'architecture' is {arch_raw!r}; corrsteer supports "
                             f"'standard' (ReLU), 'jumprelu' and 'topk'")
    arch = _ARCHITECTURES[arch_raw]
    if arch == "relu" and act_fn not in (None, "relu"):
        raise CorrsteerError(f"{cfg_path}: field 'activation_fn' is {act_fn!r}; only 'relu' and "
                             f"'topk' are supported")
    norm = field("normalize_activations")
    if norm not in (None, False, "none"):
        raise CorrsteerError(
            f"{cfg_path}: field 'normalize_activations' is {norm!r}; the SAE expects rescaled inputs "
            f"that corrsteer does not reproduce. Fold the scaling factor into the weights "
            f"(SAELens: sae.fold_activation_norm_scaling_factor) and set it to 'none'")
    if field("hook_head_index", "hook_point_head_index") is not None:
        raise CorrsteerError(f"{cfg_path}: field 'hook_head_index' is set; per-head SAEs are not "
                             f"supported (corrsteer reads whole residual-stream sites)")
    if field("reshape_activations") not in (None, "none"):
        raise CorrsteerError(f"{cfg_path}: field 'reshape_activations' is "
                             f"{field('reshape_activations')!r}; only 'none' is supported")
    if field("hook_name_out") is not None or "transcoder" in str(arch_raw):
        raise CorrsteerError(f"{cfg_path}: transcoders (hook_name_out) are not supported")
    # SAELens before 6.0 defaulted apply_b_dec_to_input to True when absent.
    apply_b_dec = field("apply_b_dec_to_input")
    apply_b_dec = True if apply_b_dec is None else bool(apply_b_dec)

    w = read_safetensors(w_path)
    W_enc, W_dec, b_enc, b_dec = (_take(w, n, w_path) for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
    threshold = None
    if arch == "jumprelu":
        if "threshold" in w:
            threshold = w["threshold"]
        elif "log_threshold" in w:
            threshold = np.exp(w["log_threshold"].astype(np.float64)).astype(np.float32)
        else:
            raise CorrsteerError(f"{w_path}: JumpReLU SAE has neither 'threshold' nor "
                                 f"'log_threshold'")
    d_in, d_sae = _check_shapes(W_enc, W_dec, b_enc, b_dec, threshold, w_path)
    for name, want in (("d_in", d_in), ("d_sae", d_sae)):
        got = field(name)
        if got is not None and int(got) != want:
            raise CorrsteerError(f"{cfg_path}: field {name!r} is {got} but {w_path.name} holds "
                                 f"{name}={want}")
    scale = w.get("scaling_factor", w.get("finetuning_scaling_factor"))
    if scale is not None:  # decode(f * s) == decode'(f) with W_dec' = diag(s) W_dec: exact fold
        W_dec = W_dec * _vector(scale, d_sae, "scaling_factor", w_path)[:, None]
    if arch == "topk":
        if k is None:
            raise CorrsteerError(f"{cfg_path}: TopK SAE without field 'k' "
                                 f"(or 'activation_fn_kwargs.k')")
        if field("rescale_acts_by_decoder_norm"):
            # pre' = pre * |W_dec_i|, decode uses W_dec_i / |W_dec_i|: fold both into the weights.
            n = np.linalg.norm(W_dec.astype(np.float64), axis=1)
            W_enc = W_enc * n[None, :].astype(np.float32)
            b_enc = b_enc * n.astype(np.float32)
            W_dec = (W_dec / np.where(n > 0, n, 1.0)[:, None]).astype(np.float32)
    hook = field("hook_name", "hook_point")
    layer, site = parse_hook_name(hook, source=str(cfg_path)) if hook else (None, "resid_post")
    hook_layer = field("hook_layer")
    if layer is None and hook_layer is not None:
        layer = int(hook_layer)
    sae = _build(W_enc, b_enc, W_dec, b_dec, threshold, arch, k, apply_b_dec, root)
    sae.hook_name = hook if hook else hook_name_for(layer, site)
    sae.layer, sae.site = layer, site
    sae.meta.update({"format": "saelens", "model_name": field("model_name")})
    if isinstance(cfg.get("corrsteer"), dict):
        sae.meta.update(cfg["corrsteer"])
        sae.meta["format"] = "corrsteer"
    sae.meta["source"] = str(root)
    return sae


def _load_gemma_scope_2(root: Path) -> Any:
    w_path, cfg_path = root / GS2_WEIGHTS, root / GS2_CFG
    cfg = _read_json(cfg_path) if cfg_path.exists() else {}
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
        layer, site = _layer_from_path(root), "resid_post"
        if "resid_post" not in str(root):
            raise CorrsteerError(f"{root}: no {GS2_CFG} with 'hf_hook_point_in' and the folder name "
                                 f"does not say the site; put the release's config.json beside "
                                 f"{GS2_WEIGHTS}")
    arch_raw = cfg.get("architecture", "jump_relu")
    if arch_raw not in _ARCHITECTURES:
        raise CorrsteerError(f"{cfg_path}: field 'architecture' is {arch_raw!r}; expected 'jump_relu'")
    arch = _ARCHITECTURES[arch_raw]
    w = read_safetensors(w_path)
    W_enc, W_dec, b_enc, b_dec = (_take(w, n, w_path, alias=n.replace("W_", "w_"))
                                  for n in ("w_enc", "w_dec", "b_enc", "b_dec"))
    threshold = _take(w, "threshold", w_path) if arch == "jumprelu" else None
    _, d_sae = _check_shapes(W_enc, W_dec, b_enc, b_dec, threshold, w_path)
    if cfg.get("width") is not None and int(cfg["width"]) != d_sae:
        raise CorrsteerError(f"{cfg_path}: field 'width' is {cfg['width']} but {GS2_WEIGHTS} has "
                             f"d_sae={d_sae}")
    sae = _build(W_enc, b_enc, W_dec, b_dec, threshold, arch, cfg.get("k"), False, root)
    sae.hook_name = hook_name_for(layer, site)
    sae.layer, sae.site = layer, site
    sae.meta.update({"format": "gemma_scope_2", "model_name": cfg.get("model_name"),
                     "hf_hook_point_in": hook_in, "l0": cfg.get("l0"), "source": str(root)})
    return sae


def _load_gemma_scope_1(w_path: Path) -> Any:
    try:
        with open(w_path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            w = {name: np.asarray(z[name]) for name in z.files}
    except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError, OSError...
        raise CorrsteerError(f"{w_path}: cannot read the npz archive ({type(exc).__name__}: {exc}); "
                             f"the file is truncated or corrupt, download it again") from exc
    w = {("W_" + n[2:] if n.startswith("w_") else n): v for n, v in w.items()}
    W_enc, W_dec, b_enc, b_dec, threshold = (_take(w, n, w_path) for n in
                                             ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"))
    _check_shapes(W_enc, W_dec, b_enc, b_dec, threshold, w_path)
    text = str(w_path.resolve()).lower()
    if "embedding" in text or re.search(r"-att(?:[-/]|$)", text):
        raise CorrsteerError(f"{w_path}: Gemma Scope embedding and attention (hook_z) SAEs are not "
                             f"supported; use a residual-stream (-res) or MLP (-mlp) SAE")
    site = "mlp_out" if re.search(r"-mlp(?:[-/]|$)", text) else "resid_post"
    layer = _layer_from_path(w_path.parent)
    sae = _build(W_enc, b_enc, W_dec, b_dec, threshold, "jumprelu", None, False, w_path.parent)
    sae.layer, sae.site = layer, site
    sae.hook_name = hook_name_for(layer, site)
    sae.meta.update({"format": "gemma_scope_1", "source": str(w_path.parent)})
    return sae


# ---------------------------------------------------------------------------------------------
# helpers


def _build(W_enc: np.ndarray, b_enc: np.ndarray, W_dec: np.ndarray, b_dec: np.ndarray,
           threshold: np.ndarray | None, arch: str, k: Any, apply_b_dec: bool, where: Path) -> Any:
    from corrsteer.sae.model import SAE

    if threshold is not None and np.any(threshold < 0):
        # Negative thresholds gate nothing beyond the ReLU (SAELens applies threshold.relu()).
        logger.info("%s: %d negative JumpReLU thresholds clamped to 0", where,
                    int(np.sum(threshold < 0)))
        threshold = np.maximum(threshold, 0).astype(np.float32)
    if arch == "topk":
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise CorrsteerError(f"{where}: TopK field 'k' is {k!r}, not an integer") from None
        if not 0 < k <= W_enc.shape[1]:
            raise CorrsteerError(f"{where}: TopK field 'k'={k} is outside 1..d_sae={W_enc.shape[1]}")
    try:
        sae = SAE(W_enc, b_enc, W_dec, b_dec, threshold=threshold, architecture=arch,
                  k=k if arch == "topk" else None, apply_b_dec_to_input=apply_b_dec)
    except (ValueError, TypeError) as exc:
        raise CorrsteerError(f"{where}: the weights do not form a valid SAE: {exc}") from exc
    if not isinstance(getattr(sae, "meta", None), dict):
        sae.meta = {}
    return sae


def _take(w: dict[str, np.ndarray], name: str, path: Path, alias: str | None = None) -> np.ndarray:
    for n in (name, alias, name.upper() if name.startswith("w_") else None):
        if n is not None and n in w:
            arr = w[n]
            if not np.issubdtype(arr.dtype, np.floating):
                raise CorrsteerError(f"{path}: tensor {n!r} has dtype {arr.dtype}, expected float")
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.all(np.isfinite(arr)):
                raise CorrsteerError(f"{path}: tensor {n!r} holds NaN or inf values")
            return arr
    raise CorrsteerError(f"{path}: missing tensor {name!r} (found: {sorted(w)})")


def _check_shapes(W_enc: np.ndarray, W_dec: np.ndarray, b_enc: np.ndarray, b_dec: np.ndarray,
                  threshold: np.ndarray | None, path: Path) -> tuple[int, int]:
    if W_enc.ndim != 2:
        raise CorrsteerError(f"{path}: W_enc has shape {W_enc.shape}, expected (d_in, d_sae)")
    d_in, d_sae = W_enc.shape
    want = {"W_dec": (W_dec, (d_sae, d_in)), "b_enc": (b_enc, (d_sae,)), "b_dec": (b_dec, (d_in,))}
    if threshold is not None:
        want["threshold"] = (threshold, (d_sae,))
    for name, (arr, shape) in want.items():
        if arr.shape != shape:
            raise CorrsteerError(f"{path}: {name} has shape {arr.shape}, expected {shape} "
                                 f"(W_enc is (d_in={d_in}, d_sae={d_sae}))")
    return d_in, d_sae


def _vector(arr: np.ndarray, n: int, name: str, path: Path) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        return np.full(n, arr[0], dtype=np.float32)
    if arr.shape != (n,):
        raise CorrsteerError(f"{path}: {name} has shape {arr.shape}, expected ({n},)")
    return arr


def _layer_from_path(path: Path) -> int | None:
    for part in reversed(path.parts):
        m = re.match(r"layer_(\d+)(?:_|$)", part)
        if m:
            return int(m.group(1))
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CorrsteerError(f"{path} is missing; it must sit beside the weights file")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorrsteerError(f"{path}: not valid JSON ({exc}); the file is truncated or corrupt") \
            from exc
    if not isinstance(cfg, dict):
        raise CorrsteerError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


# ---------------------------------------------------------------------------------------------
# load_sae_from_hub, still importable from here; lazily, as corrsteer.sae.hub imports this module

_LAZY = {"load_sae_from_hub": "corrsteer.sae.hub"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
