"""Finding a model's decoder layers, its width and its depth.

The site of layer ``l`` (METHOD.md §1) is the output of decoder layer ``l``, so hooks
need the ``torch.nn.ModuleList`` that holds the decoder layers. :func:`find_layers`
looks, in order, at:

1. an explicit ``layers_attr`` argument (a dotted attribute path such as ``"model.layers"``);
2. paths registered with :func:`register_layers` for the model's class, any base class,
   its class name or its ``config.model_type``;
3. the paths used by known architectures: ``model.layers`` (Llama, Mistral, Qwen2,
   Gemma 2/3), ``model.language_model.layers`` (Gemma 3 multimodal),
   ``transformer.h`` (GPT-2), and a few others;
4. a search for the ModuleList of identical blocks holding the most parameters (the
   decoder stack holds most of a model's weights; a list of MoE experts inside one
   layer holds fewer).

If all fail, a :class:`~corrsteer.errors.CorrsteerError` says how to register the path.

Example:
    >>> from corrsteer.models.layers import find_layers, register_layers
    >>> layers = find_layers(model)                      # doctest: +SKIP
    >>> register_layers("MyModelForCausalLM", "backbone.blocks")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading

import torch

from corrsteer.errors import CorrsteerError

logger = logging.getLogger(__name__)

# Dotted paths, relative to the model passed in, of known architectures' decoder stacks.
KNOWN_PATHS: tuple[str, ...] = (
    "model.layers",  # *ForCausalLM of Llama, Mistral, Qwen2, Gemma 2, Gemma 3 text
    "model.language_model.layers",  # Gemma3ForConditionalGeneration (transformers 5)
    "language_model.model.layers",  # older multimodal wrappers
    "language_model.layers",  # Gemma3Model
    "transformer.h",  # GPT-2, GPT-J, Bloom-style *LMHeadModel
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "layers",  # bare decoder models (LlamaModel, Gemma2Model, ...)
    "h",  # GPT2Model
)

_REGISTRY: dict[type | str, str] = {}
_LOCK = threading.Lock()


def register_layers(model_class_or_name: type | str, layers_attr: str) -> None:
    """Tell corrsteer where a model family keeps its decoder layers.

    Args:
        model_class_or_name: a model class (subclasses match too), a class name such as
            ``"MyModelForCausalLM"``, or a ``config.model_type`` such as ``"my_model"``.
        layers_attr: dotted attribute path from the model to its ``ModuleList`` of
            decoder layers, e.g. ``"backbone.blocks"``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``layers_attr`` is empty or malformed.
    """
    if not isinstance(model_class_or_name, (type, str)) or model_class_or_name == "":
        raise TypeError(
            "model_class_or_name must be a model class or a non-empty class name / "
            f"model_type string, got {model_class_or_name!r}"
        )
    _check_attr_path(layers_attr)
    with _LOCK:
        _REGISTRY[model_class_or_name] = layers_attr


def unregister_layers(model_class_or_name: type | str) -> None:
    """Forget a registration made with :func:`register_layers` (no error if absent)."""
    with _LOCK:
        _REGISTRY.pop(model_class_or_name, None)


def _check_attr_path(layers_attr: object) -> None:
    if not isinstance(layers_attr, str):
        raise TypeError(f"layers_attr must be a dotted attribute path string, got {layers_attr!r}")
    if not layers_attr or any(not part.isidentifier() for part in layers_attr.split(".")):
        raise ValueError(
            "layers_attr must be a dotted attribute path such as 'model.layers', "
            f"got {layers_attr!r}"
        )


def _resolve(model: torch.nn.Module, path: str) -> object | None:
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _registered_path(model: torch.nn.Module) -> str | None:
    with _LOCK:
        registry = dict(_REGISTRY)
    for klass in type(model).__mro__:
        if klass in registry:
            return registry[klass]
        if klass.__name__ in registry:
            return registry[klass.__name__]
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if isinstance(model_type, str) and model_type in registry:
        return registry[model_type]
    return None


def _is_block_list(obj: object) -> bool:
    """A non-empty ModuleList whose entries all share one class and hold parameters."""
    if not isinstance(obj, torch.nn.ModuleList) or len(obj) == 0:
        return False
    first = type(obj[0])
    return all(type(m) is first for m in obj) and any(True for _ in obj[0].parameters())


def _search(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    best: tuple[int, int, str, torch.nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not name or not _is_block_list(module):
            continue
        n_params = sum(p.numel() for p in module.parameters())
        depth = name.count(".")
        key = (n_params, -depth)
        if best is None or key > (best[0], best[1]):
            best = (n_params, -depth, name, module)  # type: ignore[assignment]
    return None if best is None else (best[2], best[3])


def find_layers(model: torch.nn.Module, layers_attr: str | None = None) -> torch.nn.ModuleList:
    """The ``ModuleList`` of a model's decoder layers (layer ``l`` is entry ``l``).

    Args:
        model: a transformers causal LM (or any ``torch.nn.Module``).
        layers_attr: dotted path to the layers, overriding every other rule.

    Returns:
        The decoder layers, in order.

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module``.
        CorrsteerError: no decoder layers found, or ``layers_attr`` does not name a
            non-empty ModuleList; the message says how to register the right path.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    how_to = (
        f"Point corrsteer at the layers with corrsteer.models.register_layers("
        f"{type(model).__name__!r}, 'attr.path') or find_layers(model, layers_attr='attr.path'), "
        "where attr.path leads from the model to its ModuleList of decoder layers."
    )
    explicit = layers_attr if layers_attr is not None else _registered_path(model)
    if explicit is not None:
        _check_attr_path(explicit)
        found = _resolve(model, explicit)
        if not isinstance(found, torch.nn.ModuleList) or len(found) == 0:
            raise CorrsteerError(
                f"layers_attr {explicit!r} does not lead to a non-empty torch.nn.ModuleList "
                f"in {type(model).__name__} (found {type(found).__name__}). {how_to}"
            )
        return found
    for path in KNOWN_PATHS:
        found = _resolve(model, path)
        if _is_block_list(found):
            return found  # type: ignore[return-value]
    searched = _search(model)
    if searched is not None:
        name, found = searched
        logger.info("decoder layers of %s found by search at %r (%d blocks)",
                    type(model).__name__, name, len(found))
        return found
    raise CorrsteerError(f"cannot find the decoder layers of {type(model).__name__}. {how_to}")


def n_layers(model: torch.nn.Module) -> int:
    """Number of decoder layers of ``model`` (``len(find_layers(model))``)."""
    return len(find_layers(model))


def d_model(model: torch.nn.Module) -> int:
    """Width of the residual stream of ``model``.

    Read from the (text) config's ``hidden_size``, else from the input embeddings (for a
    module that is not a transformers model: its first ``nn.Embedding``).

    Raises:
        CorrsteerError: neither is available.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    if config is not None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        width = getattr(text, "hidden_size", None)
        if isinstance(width, int) and width > 0:
            return width
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if emb is None:  # not a transformers model: its first embedding table
        emb = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
    if isinstance(emb, torch.nn.Embedding):
        return int(emb.embedding_dim)
    raise CorrsteerError(
        f"cannot tell the residual width of {type(model).__name__}: it has no "
        "config.hidden_size and no nn.Embedding input embeddings"
    )
