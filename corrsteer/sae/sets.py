"""Resolving an SAE set from the command line's ``--sae``: ``"default"`` or SAE folders.

Example:
    >>> saes = load_saes("default", model, tokenizer, layers=(3, 6))        # doctest: +SKIP
    >>> saes = load_saes("gs/layer_6/width_16k,gs/layer_9/width_16k", model, tokenizer)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from corrsteer.models import d_model, find_layers
from corrsteer.sae.defaults import SETS, train_default_saes
from corrsteer.sae.model import SAE

__all__ = ["describe_saes", "load_saes"]


def load_saes(spec: str, model: Any, tokenizer: Any, layers: Sequence[int] | None = None,
              progress: bool = True, train: bool = True, data_dir: str | None = None) -> dict[int, Any]:
    """The SAEs of ``--sae``: a named set (``"default"``), a path, or a comma list of paths.

    Args:
        spec: a named set of :data:`corrsteer.sae.defaults.SETS` (``"default"``, ``"default-8k"``,
            ``"default-16k"``: trained once by :func:`corrsteer.sae.defaults.train_default_saes`, then
            cached) or SAE paths.
        model, tokenizer: the model the SAEs are used with.
        layers: keep only these layers (each must have an SAE); None = every SAE given
            (for "default": ``corrsteer.sae.defaults.DEFAULT_LAYERS`` within the model's depth).
        progress: tqdm bars while default SAEs are trained (first use only).
        train: for "default", train the layers missing from the cache (after a warning that says
            so); False refuses with a ``ValueError`` naming them (``--no-train``).
        data_dir: a datasets root to try first for the default SAEs' training text.

    Returns:
        ``{layer: SAE}`` sorted by layer.

    Raises:
        ValueError: no SAE for a requested layer, an SAE whose layer is unknown, two SAEs
            for one layer, a layer beyond the model's depth, or a width mismatch.
    """
    n_layers = len(find_layers(model))
    if layers is not None:
        bad = [l for l in layers if not 0 <= l < n_layers]
        if bad:
            raise ValueError(f"layers {bad} are out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("sae must be 'default' or one or more SAE paths separated by commas")
    if spec.strip() in SETS:
        saes = dict(train_default_saes(model, tokenizer, layers=None if layers is None else list(layers), cache=True,
                                       progress=progress, train=train, data_root=data_dir,
                                       settings=SETS[spec.strip()]))
    else:
        paths = [p.strip() for p in spec.split(",") if p.strip()]
        single_layer = layers[0] if layers is not None and len(layers) == 1 and len(paths) == 1 else None
        saes = {}
        for path in paths:
            sae = SAE.load(path, d_model=d_model(model), layer=single_layer)
            if sae.layer is None:
                raise ValueError(f"SAE {path!r} does not say which layer it reads; give one --sae path with "
                                 "one --layers L, or save the SAE with its hook_name")
            if sae.layer in saes:
                raise ValueError(f"two SAEs for layer {sae.layer} ({path!r} and an earlier one); give one per layer")
            saes[int(sae.layer)] = sae
    if layers is not None:
        missing = [l for l in layers if l not in saes]
        if missing:
            raise ValueError(f"no SAE for layers {missing}; the SAEs given cover layers {sorted(saes)}")
        saes = {l: saes[l] for l in layers}
    bad = [l for l in saes if not 0 <= l < n_layers]
    if bad:
        raise ValueError(f"SAEs for layers {bad} but the model has {n_layers} layers; load SAEs made for this model")
    if not saes:
        raise ValueError(f"no SAE was found for --sae {spec!r}")
    return dict(sorted(saes.items()))


def describe_saes(saes: Mapping[int, Any]) -> dict[str, dict[str, Any]]:
    """What results.json and the report record of an SAE set: per layer where it came from and how good it is.

    Returns:
        ``{layer: {source, format, architecture, d_sae, k, hook_name, settings_hash, metrics, texts}}``;
        ``settings_hash`` is the default set's cache folder (None for other SAEs), ``metrics`` the
        held-out explained variance, L0 and dead fraction when the SAE carries them, ``texts`` the
        training mix (counts and digests) of a default SAE.
    """
    out = {}
    for layer, sae in sorted(saes.items()):
        meta = dict(getattr(sae, "meta", {}) or {})
        source = meta.get("cache_path") or meta.get("source")
        metrics = {k: meta.get("metrics", {}).get(k) for k in ("explained_variance", "l0", "dead_fraction")
                   if meta.get("metrics", {}).get(k) is not None}
        texts = meta.get("texts") or {}
        out[str(layer)] = {
            "source": source, "format": meta.get("format"), "architecture": sae.architecture, "d_sae": sae.d_sae,
            "k": sae.k, "hook_name": sae.hook_name,
            "settings_hash": Path(source).parent.name if source and meta.get("default_settings") else None,
            "metrics": metrics,
            "texts": {k: texts[k] for k in ("model_samples", "model_samples_sha256", "dataset_rows",
                                            "dataset_rows_sha256", "datasets") if k in texts},
        }
    return out
