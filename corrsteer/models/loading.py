"""Loading language models: embedded GGUFs, local folders, GGUF files and hub ids.

:func:`load_model` returns a model in eval mode and a tokenizer ready for batched greedy
generation (left padding, a pad token, no sampling defaults). Sources, tried in order:

- an embedded name (``"gemma-3-270m"``, the default, or ``"smollm2-135m-instruct"``):
  works offline, see :mod:`corrsteer.models.embedded`;
- a ``.gguf`` file (transformers' ``gguf_file=`` loader, which de-quantises);
- a local HuggingFace directory (``config.json`` + weights + tokenizer);
- a hub id, when the hub is reachable (or the model is in the local HF cache).

A GGUF is converted once: the de-quantised model and its tokenizer are saved with
``save_pretrained`` into the cache, keyed by the GGUF's sha256 and the transformers
version, and later loads read that folder (about 1 s instead of ~45 s for Gemma 3 270M).

Example:
    >>> from corrsteer.models import load_model, find_layers, d_model
    >>> model, tok = load_model("gemma-3-270m")          # doctest: +SKIP
    >>> len(find_layers(model)), d_model(model)          # doctest: +SKIP
    (18, 640)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from corrsteer.errors import CorrsteerError
from corrsteer.models.embedded import EMBEDDED, converted_dir, embedded_gguf, sha256_file
from corrsteer.models.layers import d_model, n_layers
from corrsteer.storage.atomic import replace_dir
from corrsteer.storage.hub import hub_reachable

__all__ = ["load_model", "model_id", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MARKER = "corrsteer.json"  # written last into a converted folder: its presence means complete
_SAMPLING_FLAGS = ("temperature", "top_p", "top_k", "min_p", "typical_p",
                   "epsilon_cutoff", "eta_cutoff")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> ``cuda`` if available else ``cpu``; strings such as ``"cuda:0"`` parsed.

    Raises:
        ValueError: not a device string, or CUDA asked for but not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or None, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu' or None")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> float32 on CPU, bfloat16 on CUDA; ``"float32"|"bfloat16"|"float16"`` accepted.

    Raises:
        ValueError: an unsupported dtype.
    """
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"dtype must be one of {sorted(_DTYPES)} (or None), got {dtype!r}")


def load_model(name_or_path: str | os.PathLike[str] = "gemma-3-270m", device: str | None = None,
               dtype: str | torch.dtype | None = None) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, ready for batched greedy generation.

    Args:
        name_or_path: an embedded name (``"gemma-3-270m"``, ``"smollm2-135m-instruct"``),
            a ``.gguf`` file, a local HuggingFace directory, or a hub id.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or None (CUDA if available).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype; None means
            float32 on CPU and bfloat16 on CUDA.

    Returns:
        ``(model, tokenizer)``: the model in eval mode on ``device``; the tokenizer pads
        on the left and has a pad token; ``model.generation_config`` is greedy.

    Raises:
        TypeError, ValueError: a bad argument or a path that is not a model.
        CorrsteerError: embedded packages missing/corrupt, or the hub unreachable.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    name = os.fspath(name_or_path)
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        # The parts are only assembled (and hashed) when no converted cache exists.
        model, tok = _load_gguf(lambda: embedded_gguf(name), spec.sha256,
                                converted_dir(spec.sha256), dt)
        ident = name
    else:
        path = Path(name).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            sha = sha256_file(path)
            model, tok = _load_gguf(lambda: path, sha, converted_dir(sha), dt)
            ident = f"{path.stem}-{sha[:12]}"
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise ValueError(
                    f"{path} has no config.json: it is not a HuggingFace model directory")
            model, tok = _load_dir(path, dt)
            ident = None  # fingerprint on first use
        elif path.exists() or not _HUB_ID.match(name) or name.endswith(".gguf"):
            raise ValueError(
                f"{name!r} is neither an embedded model ({', '.join(sorted(EMBEDDED))}), nor an "
                "existing .gguf file or HuggingFace directory, nor a hub id"
            )
        else:
            model, tok = _load_hub(name, dt)
            ident = name
    model.to(dev)
    model.eval()
    if ident is not None:
        model._corrsteer_model_id = ident
    _prepare_tokenizer(model, tok)
    logger.info("loaded %s on %s as %s (%d layers, d_model=%d)",
                name, dev, dt, n_layers(model), d_model(model))
    return model, tok


def _prepare_tokenizer(model: Any, tok: Any) -> None:
    """Left padding, a pad token (the model's, else EOS) and a greedy generation config."""
    tok.padding_side = "left"
    if tok.pad_token is None:
        pad_id = getattr(model.config, "pad_token_id", None)
        if isinstance(pad_id, int) and 0 <= pad_id < len(tok):
            tok.pad_token = tok.convert_ids_to_tokens(pad_id)
        elif tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        else:
            raise CorrsteerError(
                f"the tokenizer of {type(model).__name__} has neither a pad nor an EOS token; "
                "set tokenizer.pad_token before using corrsteer"
            )
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.do_sample = False
        for flag in _SAMPLING_FLAGS:
            if getattr(gen, flag, None) is not None:
                setattr(gen, flag, None)
        gen.pad_token_id = tok.pad_token_id
        if gen.eos_token_id is None and tok.eos_token_id is not None:
            gen.eos_token_id = tok.eos_token_id


def _auto_classes() -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM, AutoTokenizer


def _load_dir(path: Path, dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
    auto_model, auto_tok = _auto_classes()
    try:
        tok = auto_tok.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(
            f"cannot load a tokenizer from {path}: {exc}. Save one beside the model with "
            "tokenizer.save_pretrained(dir)"
        ) from exc
    model = auto_model.from_pretrained(str(path), dtype=dtype, **kwargs)
    return model, tok


def _is_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file()


def _load_gguf(get_gguf: Callable[[], Path], sha: str, target: Path,
               dtype: torch.dtype) -> tuple[Any, Any]:
    """Load a GGUF through its converted cache folder ``target``, converting it if needed.

    Args:
        get_gguf: returns the GGUF file; called only when a conversion is needed.
        sha: the GGUF's sha256 (recorded in the cache folder).
        target: the cache folder (see ``corrsteer.models.embedded.converted_dir``).
        dtype: dtype of the returned model.
    """
    if _is_complete(target):
        try:
            return _load_dir(target, dtype)
        except (OSError, ValueError, RuntimeError) as exc:
            logger.warning("converted cache %s is unreadable (%s); converting again", target, exc)
            shutil.rmtree(target, ignore_errors=True)
    gguf = get_gguf()
    auto_model, auto_tok = _auto_classes()
    logger.info("converting %s (de-quantising; done once, then cached in %s)", gguf, target)
    tok = auto_tok.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = auto_model.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The de-quantised weights are plain tensors: drop the GGUF marker so the saved
    # folder (and any save by the user) loads as an ordinary model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    _save_converted(model, tok, target, {"gguf_sha256": sha, "gguf_file": gguf.name})
    if dtype != torch.float32:
        model.to(dtype)
    return model, tok


def _save_converted(model: Any, tok: Any, target: Path, meta: dict[str, str]) -> None:
    """Save model + tokenizer into ``target`` atomically (:func:`corrsteer.storage.atomic.replace_dir`).

    A full or read-only disk costs speed later (the next load converts again), not this
    load; a concurrent writer that finished first keeps its folder.
    """
    import transformers

    try:
        with replace_dir(target, overwrite=False) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tok.save_pretrained(str(tmp))
            info = dict(meta, transformers=transformers.__version__, torch=torch.__version__)
            (tmp / _MARKER).write_text(json.dumps(info, indent=2) + "\n")
        logger.info("saved the converted model to %s", target)
    except FileExistsError:
        logger.info("another process saved %s first; keeping its copy", target)
    except OSError as exc:
        logger.warning("cannot save the converted model to %s (%s); the next load will "
                       "convert again", target, exc)


def _load_hub(name: str, dtype: torch.dtype) -> tuple[Any, Any]:
    if hub_reachable():
        try:
            return _from_hub(name, dtype)
        except OSError as exc:
            raise ValueError(f"cannot load {name!r} from the HuggingFace hub: {exc}") from exc
    try:
        return _from_hub(name, dtype, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CorrsteerError(
            f"cannot load {name!r}: the HuggingFace hub is unreachable and the model is not in "
            "the local HuggingFace cache. Download it on a connected machine (e.g. "
            f"`huggingface-cli download {name} --local-dir DIR`) and call load_model('DIR'), "
            f"or use an embedded model that works offline: {', '.join(sorted(EMBEDDED))}. "
            f"(No local file or folder named {name!r} exists either.)"
        ) from exc


def _from_hub(name: str, dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
    auto_model, auto_tok = _auto_classes()
    tok = auto_tok.from_pretrained(name, **kwargs)
    model = auto_model.from_pretrained(name, dtype=dtype, **kwargs)
    return model, tok


def model_id(model: torch.nn.Module) -> str:
    """A stable name for a model, for cache keys and results.

    The embedded name or hub id when :func:`load_model` loaded it by name;
    ``<stem>-<sha256[:12]>`` for a GGUF file; otherwise ``<name>-<fingerprint[:12]>``,
    where the fingerprint hashes the class, the config and a strided sample of every
    parameter rounded to bfloat16 (so float32 and bfloat16 loads of the same weights
    agree, and different weights almost surely differ).

    Args:
        model: any ``torch.nn.Module``, usually from :func:`load_model`.

    Returns:
        The id; computed once and remembered on the model.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    known = getattr(model, "_corrsteer_model_id", None)
    if isinstance(known, str):
        return known
    config = getattr(model, "config", None)
    source = getattr(config, "_name_or_path", "") or ""
    if source and not os.path.exists(source) and _HUB_ID.match(source) and "/" in source:
        ident = source
    else:
        ident = f"{Path(source).name or type(model).__name__}-{_fingerprint(model)[:12]}"
    model._corrsteer_model_id = ident
    return ident


def _fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items()
               if k not in {"_name_or_path", "dtype", "torch_dtype", "transformers_version"}}
        digest.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            sample = flat[::step][:4096].to("cpu", torch.bfloat16).contiguous().view(torch.int16)
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()
