"""Whether the Hugging Face hub can be reached: the one probe every loader asks first.

Offline is the normal case on many research machines, and a download that hangs for
minutes before failing is worse than a clear message. :func:`hub_offline` says whether the
user switched the hub off (``HF_HUB_OFFLINE``); :func:`hub_reachable` opens a TCP connection
to the hub's host with a deadline, in a daemon thread so that a hanging DNS lookup cannot
block the caller. Behind a proxy a direct probe says nothing, so the answer is "try".

Example:
    >>> hub_offline()                      # doctest: +SKIP
    False
    >>> hub_reachable(timeout=1.0)         # doctest: +SKIP
    False
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

__all__ = ["DEFAULT_ENDPOINT", "hub_endpoint", "hub_offline", "hub_reachable"]

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "on", "yes", "true"}
_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``$HF_ENDPOINT``, else the public hub."""
    return endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT


def hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub's host opens within ``timeout`` seconds.

    False when the hub is switched off (:func:`hub_offline`); True behind a proxy (the
    hub client is then left to try).
    """
    if hub_offline():
        return False
    if any(os.environ.get(v) for v in _PROXIES):
        return True
    url = urlparse(hub_endpoint(endpoint))
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok and ok[0])
