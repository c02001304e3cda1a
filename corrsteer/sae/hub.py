"""Released SAEs from the Hugging Face hub (or its local cache): :func:`fetch_sae_files`.

The files of one of the layouts that :func:`corrsteer.sae.formats.read_sae` reads are
taken from the local Hugging Face cache when present, otherwise downloaded.
Offline (``HF_HUB_OFFLINE=1``) or with the hub unreachable, an SAE that is not cached
fails fast with a message saying so. ``huggingface_hub`` is imported only when called.
:meth:`corrsteer.SAE.from_pretrained` is the usual entry point.

Example:
    >>> folder, origin = fetch_sae_files("gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82")  # doctest: +SKIP
    >>> origin["repo_id"]                                                                              # doctest: +SKIP
    'google/gemma-scope-2b-pt-res'
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from corrsteer.errors import CorrsteerError
from corrsteer.sae.formats import GS1_WEIGHTS, GS2_CFG, GS2_WEIGHTS, SAELENS_CFG, SAELENS_WEIGHTS
from corrsteer.storage.hub import hub_endpoint, hub_offline, hub_reachable

__all__ = ["fetch_sae_files"]


def fetch_sae_files(release: str, sae_id: str, *, revision: str | None = None,
                    cache_dir: str | os.PathLike | None = None, endpoint: str | None = None,
                    timeout: float = 10.0) -> tuple[Path, dict[str, Any]]:
    """The local folder of a released SAE: from the Hugging Face cache, else downloaded.

    Args:
        release: a hub repo id (``"google/gemma-scope-2b-pt-res"``) or a Gemma Scope
            release name (``"gemma-scope-2b-pt-res"``, ``"gemma-scope-2-1b-pt"``).
            Other SAELens release names need their repo id (see SAELens'
            ``pretrained_saes.yaml``).
        sae_id: the folder inside the repo (``"layer_12/width_16k/average_l0_82"``,
            ``"resid_post/layer_12_width_16k_l0_small"``, ``"blocks.8.hook_resid_pre"``).
        revision, cache_dir, endpoint: passed to ``huggingface_hub.hf_hub_download``.
        timeout: seconds to wait for the hub before failing.

    Returns:
        ``(folder, origin)``: the folder holding the files, and ``{"repo_id", "sae_id",
        "revision"}`` to record where they came from.

    Raises:
        CorrsteerError: offline (``HF_HUB_OFFLINE=1`` or the hub unreachable) and not
            cached, or the repo has no SAE at ``sae_id``.
    """
    try:
        import huggingface_hub
        from huggingface_hub import constants as hf_constants
    except ImportError as exc:
        raise CorrsteerError("SAE.from_pretrained needs huggingface_hub (pip install "
                             "huggingface_hub), or download the files and use load_sae(path)") from exc
    repo_id = _repo_id(release)
    offline = hub_offline() or bool(hf_constants.HF_HUB_OFFLINE)
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
        url = hub_endpoint(endpoint)
        if not hub_reachable(url, timeout):
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
    return where, {"repo_id": repo_id, "sae_id": folder, "revision": revision}


def _repo_id(release: str) -> str:
    release = str(release).strip()
    if "/" in release:
        return release
    if release.startswith("gemma-scope-") and not release.endswith("-canonical"):
        return f"google/{release}"
    if importlib.util.find_spec("sae_lens") is not None:
        hint = "it is not in SAELens' pretrained directory either"
    else:
        hint = ("SAELens release names resolve when sae-lens is installed: pip install 'corrsteer[saelens]' "
                "(or bash scripts/install_extras.sh saelens)")
    raise ValueError(f"release {release!r} is not a hub repo id; pass 'owner/name' and the folder, or a SAELens "
                     f"release name; {hint}")


def _is_missing_entry(exc: Exception) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"EntryNotFoundError", "RemoteEntryNotFoundError",
                         "LocalEntryNotFoundError"})
