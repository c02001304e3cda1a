"""Where on a decoder layer capture and steering attach (METHOD.md §1).

The site of layer ``l`` is ``resid_post``: the output of decoder layer ``l``
(``hidden_states[l + 1]`` in transformers), read and written with a forward hook.
``resid_pre`` is the input of decoder layer ``l`` (``hidden_states[l]``), reached with
a forward pre-hook on the same layer. Other SAE sites (``resid_mid``, ``mlp_out``,
``attn_out``) live inside the layer and are refused with a ``ValueError``.

A site function ``fn(hidden) -> hidden`` sees the layer's residual stream,
(n_rows, n_cols, d_model), and returns it (or a modified copy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from corrsteer.config import HOOK_SITES
from corrsteer.errors import CorrsteerError

__all__ = ["attach", "check_layer", "check_site", "read_sites"]

SiteFn = Callable[[torch.Tensor], torch.Tensor]


def check_site(site: Any, what: str) -> str:
    """Return ``site`` if capture/steer can attach there, else raise ``ValueError``."""
    if site not in HOOK_SITES:
        raise ValueError(f"{what} reads site {site!r}, which capture()/steer() cannot attach to; "
                         f"supported sites: {', '.join(HOOK_SITES)} (the residual stream after/before a "
                         "decoder layer)")
    return site


def check_layer(layer: Any, n_layers: int, what: str) -> int:
    """``layer`` as an int in ``[0, n_layers)``, else ``ValueError``/``TypeError``."""
    if isinstance(layer, bool) or not isinstance(layer, int) and not hasattr(layer, "__index__"):
        raise TypeError(f"{what}: layer must be an int, got {type(layer).__name__}")
    layer = int(layer)
    if not 0 <= layer < n_layers:
        raise ValueError(f"{what}: layer {layer} is out of range; the model has {n_layers} decoder "
                         f"layers (0 … {n_layers - 1})")
    return layer


def attach(module: torch.nn.Module, site: str, fn: SiteFn, prepend: bool) -> Any:
    """Run ``fn`` on the residual stream at ``site`` of decoder layer ``module``.

    Args:
        module: one decoder layer.
        site: ``"resid_post"`` (its output) or ``"resid_pre"`` (its input).
        fn: hidden (n_rows, n_cols, d_model) -> hidden; returning the same object
            leaves the stream untouched.
        prepend: run before hooks already registered at this site (steering
            prepends so that a capture at the same site reads the steered stream).

    Returns:
        The torch hook handle (``.remove()`` detaches it).
    """
    if site == "resid_post":
        def post_hook(mod: torch.nn.Module, args: tuple, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            if not torch.is_tensor(hidden):
                raise CorrsteerError(f"{type(mod).__name__} returned {type(output).__name__}, not a tensor or "
                                     "tuple; corrsteer cannot read its residual stream")
            new = fn(hidden)
            if new is hidden:
                return None
            return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new

        return module.register_forward_hook(post_hook, prepend=prepend)

    def pre_hook(mod: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            new = fn(args[0])
            return None if new is args[0] else ((new,) + tuple(args[1:]), kwargs)
        if "hidden_states" not in kwargs:
            raise CorrsteerError(f"{type(mod).__name__} was called without hidden states; corrsteer cannot "
                                 "read its input residual stream")
        new = fn(kwargs["hidden_states"])
        return None if new is kwargs["hidden_states"] else (args, {**kwargs, "hidden_states": new})

    check_site(site, "a hook")
    return module.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=prepend)


class _StopForward(Exception):
    """Raised by the last reading hook: the layers after it and the LM head need not run."""


@torch.no_grad()
def read_sites(model: torch.nn.Module, layers: Sequence[torch.nn.Module], keys: Sequence[tuple[int, str]],
               **inputs: Any) -> dict[tuple[int, str], torch.Tensor]:
    """The residual stream at each ``(layer, site)`` of ``keys`` for one forward pass.

    The pass stops as soon as every site has been read, so the deeper layers and the LM
    head never run (harvesting and label correlation need no logits).

    Args:
        model: the causal LM; called as ``model(**inputs, use_cache=False)``.
        layers: its decoder layers (``corrsteer.models.layers.find_layers``).
        keys: distinct ``(layer index, site)`` pairs, sites from ``config.HOOK_SITES``.
        **inputs: ``input_ids``, ``attention_mask``, ...

    Returns:
        ``{(layer, site): hidden}``, each (n_seq, n_tok, d_model), detached.

    Raises:
        CorrsteerError: the forward pass ended before reaching every site.
    """
    keys = list(dict.fromkeys(keys))
    seen: dict[tuple[int, str], torch.Tensor] = {}

    def reader(key: tuple[int, str]) -> SiteFn:
        def fn(hidden: torch.Tensor) -> torch.Tensor:
            seen[key] = hidden.detach()
            if len(seen) == len(keys):
                raise _StopForward
            return hidden
        return fn

    handles = [attach(layers[layer], site, reader((layer, site)), prepend=False) for layer, site in keys]
    try:
        model(**inputs, use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if len(seen) != len(keys):
        raise CorrsteerError(f"the forward pass reached {sorted(seen)} of the sites {sorted(keys)}; the "
                             "model's decoder layers did not all run")
    return seen
