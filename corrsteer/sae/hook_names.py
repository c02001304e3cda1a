"""SAE hook names: where an SAE reads the model (METHOD.md §1).

:func:`parse_hook_name` turns the hook name an SAE file carries into ``(layer, site)``:
SAELens / TransformerLens ``blocks.{L}.hook_{site}`` or a Hugging Face module path as in
Gemma Scope 2's ``hf_hook_point_in`` (``model.layers.{L}.output``). :func:`hook_name_for`
goes back to the SAELens name. Used by the format readers in
:mod:`corrsteer.sae.formats` and by :class:`corrsteer.SAEConfig`.

Example:
    >>> from corrsteer.sae.hook_names import hook_name_for, parse_hook_name
    >>> parse_hook_name("model.layers.12.output")
    (12, 'resid_post')
    >>> hook_name_for(12)
    'blocks.12.hook_resid_post'
"""

from __future__ import annotations

import re

from corrsteer.config import SITES
from corrsteer.errors import CorrsteerError

__all__ = ["hook_name_for", "parse_hook_name"]

# TransformerLens / SAELens: "blocks.12.hook_resid_post"
_TL_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(" + "|".join(SITES) + r")$")
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
