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

Example:
    >>> from corrsteer.sae.formats import load_sae, save_sae     # doctest: +SKIP
    >>> sae = load_sae("gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82")
    >>> sae.layer, sae.site
    (12, 'resid_post')
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer.errors import CorrsteerError

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
# hook names: where an SAE reads the model (METHOD.md §1)

SITES = ("resid_pre", "resid_mid", "resid_post", "mlp_out", "attn_out")
# TransformerLens / SAELens: "blocks.12.hook_resid_post"
_TL_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post|mlp_out|attn_out)$")
# Hugging Face module paths (Gemma Scope 2): "model.layers.12.output",
# "model.language_model.layers.12.output", "model.layers.12.post_feedforward_layernorm.output"
_HF_HOOK = re.compile(r"^(?:model\.)?(?:language_model\.)?(?:model\.)?layers\.(\d+)"
                      r"(\.post_feedforward_layernorm)?\.(output|input)$")


def parse_hook_name(hook_name: str, *, source: str | None = None) -> tuple[int, str]:
    """Turn an SAE's hook name into ``(layer, site)``.

    Args:
        hook_name: SAELens/TransformerLens ``blocks.{L}.hook_{site}`` or a Hugging Face
            module path as in Gemma Scope 2's ``hf_hook_point_in``
            (``model.layers.{L}.output`` = ``resid_post``, ``model.layers.{L}.input`` =
            ``resid_pre``, ``model.layers.{L}.post_feedforward_layernorm.output`` =
            ``mlp_out``).
        source: the file the name came from, for the error message.

    Returns:
        ``(layer, site)`` with ``site`` one of ``SITES``.

    Raises:
        CorrsteerError: a hook corrsteer cannot attach to (attention ``hook_z``,
            per-head hooks, embeddings, transcoder inputs).
    """
    name = str(hook_name).strip()
    m = _TL_HOOK.match(name)
    if m:
        return int(m.group(1)), m.group(2)
    m = _HF_HOOK.match(name)
    if m:
        if m.group(2):
            if m.group(3) == "output":
                return int(m.group(1)), "mlp_out"
        else:
            return int(m.group(1)), "resid_post" if m.group(3) == "output" else "resid_pre"
    where = f"{source}: " if source else ""
    raise CorrsteerError(
        f"{where}hook {name!r} is not a site corrsteer can attach to; supported: "
        f"'blocks.{{L}}.hook_{{{'|'.join(SITES)}}}' and 'model.layers.{{L}}.output' "
        f"(resid_post), '.input' (resid_pre), '.post_feedforward_layernorm.output' (mlp_out)")


def hook_name_for(layer: int | None, site: str = "resid_post") -> str | None:
    """SAELens hook name of a site: ``hook_name_for(12) == "blocks.12.hook_resid_post"``."""
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    return None if layer is None else f"blocks.{int(layer)}.hook_{site}"


# ---------------------------------------------------------------------------------------------
# safetensors, read with NumPy alone (bfloat16 included) and checked byte by byte

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4"}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file into NumPy (bfloat16 widened to float32).

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``{name: array}`` in the file's shapes.

    Raises:
        CorrsteerError: the file is truncated, its header is corrupt, or a tensor's
            bytes do not match its declared dtype and shape (the message names it).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CorrsteerError(f"{p}: cannot read ({exc})") from exc
    if len(data) < 8:
        raise CorrsteerError(f"{p}: {len(data)} bytes, too short for a safetensors file "
                             f"(truncated download?)")
    n_header = int.from_bytes(data[:8], "little")
    if n_header > len(data) - 8:
        raise CorrsteerError(f"{p}: header claims {n_header} bytes but the file has {len(data)}; "
                             f"the file is truncated or not safetensors")
    try:
        header = json.loads(data[8:8 + n_header])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorrsteerError(f"{p}: corrupt safetensors header ({exc})") from exc
    body = memoryview(data)[8 + n_header:]
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = info["dtype"], list(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CorrsteerError(f"{p}: corrupt header entry for tensor {name!r}") from exc
        if dtype not in _ST_DTYPES:
            raise CorrsteerError(f"{p}: tensor {name!r} has unsupported dtype {dtype}")
        np_dtype = np.dtype(_ST_DTYPES[dtype])
        n = int(np.prod(shape, dtype=np.int64))
        if stop > len(body) or start > stop:
            raise CorrsteerError(f"{p}: tensor {name!r} ends at byte {stop} of a {len(body)}-byte "
                                 f"body; the file is truncated, download it again")
        if stop - start != n * np_dtype.itemsize:
            raise CorrsteerError(f"{p}: tensor {name!r} has {stop - start} bytes, but {dtype} "
                                 f"{tuple(shape)} needs {n * np_dtype.itemsize}")
        arr = np.frombuffer(body[start:stop], dtype=np_dtype)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.reshape(shape).copy()
    return out


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Write float32 C-contiguous copies of ``tensors`` to a safetensors file."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
              str(path), metadata={"format": "np"})


# ---------------------------------------------------------------------------------------------
# Hugging Face hub

_TRUE = {"1", "on", "yes", "true"}


def load_sae_from_hub(release: str, sae_id: str, *, revision: str | None = None,
                      cache_dir: str | os.PathLike | None = None, endpoint: str | None = None,
                      timeout: float = 10.0, **load_kw: Any) -> Any:
    """Download (or take from the local cache) an SAE from the Hugging Face hub and load it.

    Args:
        release: a hub repo id (``"google/gemma-scope-2b-pt-res"``) or a Gemma Scope
            release name (``"gemma-scope-2b-pt-res"``, ``"gemma-scope-2-1b-pt"``).
            Other SAELens release names need their repo id (see SAELens'
            ``pretrained_saes.yaml``).
        sae_id: the folder inside the repo (``"layer_12/width_16k/average_l0_82"``,
            ``"resid_post/layer_12_width_16k_l0_small"``, ``"blocks.8.hook_resid_pre"``).
        revision, cache_dir, endpoint: passed to ``huggingface_hub.hf_hub_download``.
        timeout: seconds to wait for the hub before failing.
        **load_kw: ``d_model``, ``layer``, ``device`` for ``load_sae``.

    Returns:
        The loaded ``corrsteer.SAE``; ``meta["hub"]`` records repo, folder and revision.

    Raises:
        CorrsteerError: offline (``HF_HUB_OFFLINE=1`` or the hub unreachable) and not
            cached, or the repo has no SAE at ``sae_id``.
    """
    try:
        import huggingface_hub
        from huggingface_hub import constants as hf_constants
    except ImportError as exc:
        raise CorrsteerError("load_sae_from_hub needs huggingface_hub (pip install "
                             "huggingface_hub), or download the files and use load_sae(path)") from exc
    repo_id = _repo_id(release)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(
        hf_constants.HF_HUB_OFFLINE)
    gs2 = "gemma-scope-2" in repo_id
    layouts = [[GS2_WEIGHTS, GS2_CFG], [SAELENS_CFG, SAELENS_WEIGHTS], [GS1_WEIGHTS]]
    if not gs2 and "gemma-scope" in repo_id:
        layouts = [[GS1_WEIGHTS], [SAELENS_CFG, SAELENS_WEIGHTS]]
    elif not gs2:
        layouts = [[SAELENS_CFG, SAELENS_WEIGHTS], [GS2_WEIGHTS, GS2_CFG], [GS1_WEIGHTS]]
    folder = sae_id.strip("/")

    def fetch(local_only: bool) -> Path | None:
        for files in layouts:
            got = []
            for fname in files:
                try:
                    got.append(huggingface_hub.hf_hub_download(
                        repo_id, f"{folder}/{fname}" if folder else fname, revision=revision,
                        cache_dir=cache_dir, endpoint=endpoint, etag_timeout=timeout,
                        local_files_only=local_only))
                except Exception as exc:  # noqa: BLE001 - classified below
                    if _is_missing_entry(exc):
                        break
                    raise
            else:
                return Path(got[0]).parent
        return None

    try:
        where = fetch(local_only=True)
    except Exception:  # noqa: BLE001 - a cache miss in any form means "not cached"
        where = None
    if where is None:
        if offline:
            raise CorrsteerError(f"SAE {repo_id}/{folder} is not in the local Hugging Face cache and "
                                 f"HF_HUB_OFFLINE is set; download it on a connected machine or "
                                 f"load the files with corrsteer.SAE.load(path)")
        url = endpoint or os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT
        if not _reachable(url, timeout):
            raise CorrsteerError(f"cannot reach the Hugging Face hub at {url} within {timeout:g} s "
                                 f"to download {repo_id}/{folder}; check the network or load the "
                                 f"files with corrsteer.SAE.load(path)")
        try:
            where = fetch(local_only=False)
        except Exception as exc:  # noqa: BLE001
            raise CorrsteerError(f"downloading {repo_id}/{folder} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if where is None:
            raise CorrsteerError(f"{repo_id} has no SAE at {folder!r}: looked for "
                                 f"{', '.join('+'.join(f) for f in layouts)}")
    sae = load_sae(where, **load_kw)
    sae.meta["hub"] = {"repo_id": repo_id, "sae_id": folder, "revision": revision}
    return sae


def _repo_id(release: str) -> str:
    release = str(release).strip()
    if "/" in release:
        return release
    if release.startswith("gemma-scope-") and not release.endswith("-canonical"):
        return f"google/{release}"
    raise ValueError(f"release {release!r} is not a hub repo id; pass 'owner/name' (for SAELens "
                     f"releases, the repo_id listed in SAELens' pretrained_saes.yaml)")


def _is_missing_entry(exc: Exception) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"EntryNotFoundError", "RemoteEntryNotFoundError",
                         "LocalEntryNotFoundError"})


def _reachable(url: str, timeout: float) -> bool:
    """True when a TCP connection to ``url``'s host opens within ``timeout`` seconds.

    Runs in a daemon thread so that a hanging DNS lookup cannot block the caller.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    u = urlparse(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])
