"""SAELens in corrsteer: live ``sae_lens.SAE`` objects and SAELens' pretrained-SAE directory.

- :func:`sae_lens_files` reads a ``sae_lens.SAE`` (standard/ReLU, JumpReLU, TopK) through the
  same checks as a SAELens ``cfg.json`` on disk (:func:`corrsteer.sae.formats.parse_saelens`):
  its config gives the hook, so the layer and site follow (``blocks.12.hook_resid_post`` is
  the output of decoder layer 12); ``rescale_acts_by_decoder_norm`` is folded exactly;
  hooks corrsteer cannot attach to (``hook_z``, per-head SAEs, transcoders) are refused.
  :meth:`corrsteer.SAE.from_sae_lens` builds the SAE, and every corrsteer API that takes
  SAEs (``capture``, ``collect``, ``select``, ``Selection.from_features``, ``run``) converts
  a SAELens one with :func:`corrsteer.sae.model.as_sae`.
- :func:`lookup_release` resolves a SAELens release name and SAE id (``"gemma-scope-2b-pt-res-canonical"``,
  ``"layer_12/width_16k/canonical"``) to the hub repo and folder, from SAELens' own
  ``pretrained_saes.yaml`` when ``sae_lens`` is installed; :meth:`corrsteer.SAE.from_pretrained`
  uses it.

``sae_lens`` is imported only by :func:`lookup_release` and :func:`load_with_sae_lens`;
:func:`is_sae_lens` recognises an object by its class's module, without importing it.

Example:
    >>> from sae_lens import JumpReLUSAE, JumpReLUSAEConfig                   # doctest: +SKIP
    >>> cfg = JumpReLUSAEConfig(d_in=640, d_sae=4096, metadata={"hook_name": "blocks.6.hook_resid_post"})  # doctest: +SKIP
    >>> corrsteer.SAE.from_sae_lens(JumpReLUSAE(cfg))                          # doctest: +SKIP
    SAE(d_in=640, d_sae=4096, architecture='jumprelu', layer=6, site='resid_post')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corrsteer.errors import CorrsteerError
from corrsteer.sae.file_checks import SAEFiles
from corrsteer.sae.formats import parse_saelens
from corrsteer.storage.hub import hub_offline

__all__ = ["READABLE_CONVERSIONS", "Release", "is_sae_lens", "load_with_sae_lens", "lookup_release", "sae_lens_files"]

# SAELens conversion functions whose files corrsteer's own readers take (sae.formats):
# None = SAELens' cfg.json + sae_weights.safetensors, gemma_2 = Gemma Scope 1, gemma_3 = Gemma Scope 2.
READABLE_CONVERSIONS = (None, "gemma_2", "gemma_3")


def is_sae_lens(obj: Any) -> bool:
    """True for an instance of a ``sae_lens`` SAE class (checked without importing sae_lens)."""
    return not isinstance(obj, type) and any(
        c.__module__.split(".")[0] == "sae_lens" and c.__name__ == "SAE" for c in type(obj).__mro__)


def sae_lens_files(sae: Any) -> SAEFiles:
    """The checked config and float32 weights of a live ``sae_lens.SAE``.

    Raises:
        TypeError: ``sae`` is not a SAELens SAE.
        CorrsteerError: an architecture or option corrsteer does not support, a hook it
            cannot attach to, malformed weights (the message names the SAE's class and field).
    """
    if not is_sae_lens(sae):
        raise TypeError(f"expected a sae_lens.SAE, got {type(sae).__name__}")
    name = type(sae).__name__
    if getattr(sae, "use_error_term", False):
        raise CorrsteerError(f"{name} has use_error_term=True; corrsteer encodes and steers without the error term, "
                             "set sae.use_error_term = False first")
    cfg = sae.cfg.to_dict()
    if getattr(sae.cfg, "metadata", None) is not None and not isinstance(cfg.get("metadata"), dict):
        cfg["metadata"] = dict(sae.cfg.metadata.to_dict())
    cfg = {k: v for k, v in cfg.items() if k not in ("dtype", "device")}

    def weights() -> dict[str, np.ndarray]:
        out = {}
        for key, tensor in sae.state_dict().items():
            t = tensor.detach().to("cpu")
            out[key] = t.float().numpy() if t.is_floating_point() else t.numpy()
        return out

    where = Path(f"<sae_lens {name}>")
    found = parse_saelens(cfg, weights, where, where / "cfg", where / "weights")
    found.meta.update({"format": "sae_lens", "sae_lens_class": name})
    return found


@dataclass(frozen=True)
class Release:
    """Where one SAE of a SAELens release lives, from SAELens' pretrained directory."""

    release: str  # SAELens release name, e.g. "gemma-scope-2b-pt-res-canonical"
    sae_id: str  # SAELens SAE id, e.g. "layer_12/width_16k/canonical"
    repo_id: str  # hub repo, e.g. "google/gemma-scope-2b-pt-res"
    path: str  # folder inside the repo, e.g. "layer_12/width_16k/average_l0_82"
    conversion: str | None  # SAELens conversion function (None: SAELens' own files)
    model: str  # the model the SAE was trained on

    @property
    def readable(self) -> bool:
        """Whether corrsteer's own readers take the files (else SAELens loads them)."""
        return self.conversion in READABLE_CONVERSIONS


def lookup_release(release: str, sae_id: str) -> Release | None:
    """A SAELens release name + SAE id resolved through SAELens' directory; None when unknown there.

    Returns None when ``sae_lens`` is not installed or does not list ``release``.

    Raises:
        ValueError: the release is listed but has no SAE ``sae_id``.
    """
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError:
        return None
    info = get_pretrained_saes_directory().get(str(release))
    if info is None:
        return None
    if sae_id not in info.saes_map:
        some = ", ".join(list(info.saes_map)[:5])
        raise ValueError(f"SAELens release {release!r} has no SAE {sae_id!r}; its ids look like {some}, ... "
                         f"({len(info.saes_map)} in all)")
    return Release(release=str(release), sae_id=sae_id, repo_id=info.repo_id, path=str(info.saes_map[sae_id]),
                   conversion=info.conversion_func, model=info.model)


def load_with_sae_lens(release: str, sae_id: str) -> Any:
    """SAELens' own ``SAE.from_pretrained`` (on the CPU), for releases whose files corrsteer cannot read.

    Raises:
        CorrsteerError: offline (``HF_HUB_OFFLINE``) or the download/conversion failed.
    """
    from sae_lens import SAE as LensSAE

    try:
        return LensSAE.from_pretrained(release, sae_id, device="cpu")
    except Exception as exc:  # noqa: BLE001 - SAELens raises many kinds; one message for all
        hint = " (HF_HUB_OFFLINE is set and the files are not cached)" if hub_offline() else ""
        raise CorrsteerError(f"SAELens could not load {release}/{sae_id}{hint}: {type(exc).__name__}: {exc}; "
                             "download it on a connected machine, or load saved files with corrsteer.SAE.load(path)"
                             ) from exc
