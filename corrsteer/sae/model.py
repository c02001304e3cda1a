"""The SAE: weights, validation, and encode/decode through the C core.

``pre = (x - b_dec·[apply_b_dec_to_input]) @ W_enc + b_enc``, then JumpReLU
(``pre · 1[pre > threshold]``), ReLU (``max(pre, 0)``) or TopK (the ``k`` largest
entries of ``pre``, ties to the lower index, ReLU'd; the rest 0). Decode:
``x_hat = f @ W_dec + b_dec`` (docs/METHOD.md §1).

Example:
    >>> import numpy as np, corrsteer
    >>> eye = np.eye(3, dtype=np.float32)
    >>> sae = corrsteer.SAE(eye, np.zeros(3, np.float32), eye, np.zeros(3, np.float32),
    ...                     threshold=np.full(3, 0.5, np.float32))
    >>> sae.encode(np.array([1.0, 0.4, -2.0], np.float32))
    array([1., 0., 0.], dtype=float32)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from corrsteer import kernels

ARCHITECTURES = ("jumprelu", "relu", "topk")
SITES = ("resid_post", "resid_pre", "resid_mid", "mlp_out", "attn_out")


def _weight(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 C-contiguous copy of ``value`` with the given shape, finite."""
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point values, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape} but must have shape {shape}")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or Inf; the SAE weights are corrupt")
    return out


class SAE:
    """A sparse autoencoder over one site of a model.

    Args:
        W_enc: (d_in, d_sae) encoder.
        b_enc: (d_sae,) encoder bias.
        W_dec: (d_sae, d_in) decoder.
        b_dec: (d_in,) decoder bias.
        threshold: (d_sae,) JumpReLU thresholds, >= 0; required for "jumprelu",
            ignored (stored as None) otherwise.
        architecture: "jumprelu", "relu" or "topk".
        k: active features per row; required for "topk" (1 <= k <= d_sae), else None.
        apply_b_dec_to_input: subtract b_dec from x before encoding (any architecture).
        hook_name: SAELens hook name, e.g. "blocks.12.hook_resid_post", or None.
        layer: decoder layer whose site the SAE reads, or None.
        site: "resid_post" (default), "resid_pre", "resid_mid", "mlp_out" or "attn_out".
        meta: free-form metadata (model name, source file, training metrics).

    All weight arrays are stored as float32 C-contiguous copies, so the C core reads
    them without another copy.
    """

    def __init__(self, W_enc: Any, b_enc: Any, W_dec: Any, b_dec: Any,
                 threshold: Any = None, architecture: str = "jumprelu", k: int | None = None,
                 apply_b_dec_to_input: bool = False, *, hook_name: str | None = None,
                 layer: int | None = None, site: str = "resid_post",
                 meta: dict | None = None) -> None:
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        enc = np.asarray(W_enc)
        if enc.ndim != 2:
            raise ValueError(f"W_enc must be 2-D (d_in, d_sae), got shape {enc.shape}")
        d_in, d_sae = enc.shape
        if d_in < 1 or d_sae < 1:
            raise ValueError(f"W_enc has shape {enc.shape}; d_in and d_sae must be >= 1")
        self.W_enc = _weight("W_enc", enc, (d_in, d_sae))
        self.b_enc = _weight("b_enc", b_enc, (d_sae,))
        self.W_dec = _weight("W_dec", W_dec, (d_sae, d_in))
        self.b_dec = _weight("b_dec", b_dec, (d_in,))
        self.architecture = architecture
        self.threshold: np.ndarray | None = None
        self.k: int | None = None
        if architecture == "jumprelu":
            if threshold is None:
                raise ValueError("threshold is required for architecture='jumprelu' "
                                 "(pass the (d_sae,) JumpReLU thresholds)")
            self.threshold = _weight("threshold", threshold, (d_sae,))
            if (self.threshold < 0).any():
                raise ValueError("threshold has negative entries; JumpReLU thresholds must be "
                                 ">= 0 (clamp them with np.maximum(threshold, 0))")
        elif architecture == "topk":
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
                raise ValueError(f"k must be an int in [1, d_sae={d_sae}] for architecture='topk', "
                                 f"got {k!r}")
            if not 1 <= k <= d_sae:
                raise ValueError(f"k must lie in [1, d_sae={d_sae}] for architecture='topk', got {k}")
            self.k = int(k)
        if site not in SITES:
            raise ValueError(f"site must be one of {SITES}, got {site!r}")
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.hook_name = hook_name
        self.layer = layer
        self.site = site
        self.meta: dict = dict(meta) if meta else {}

    @property
    def d_in(self) -> int:
        """Residual width the SAE reads (= d_model)."""
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        """Number of features."""
        return int(self.W_enc.shape[1])

    def __repr__(self) -> str:
        extra = f", k={self.k}" if self.k is not None else ""
        return (f"SAE(d_in={self.d_in}, d_sae={self.d_sae}, architecture={self.architecture!r}"
                f"{extra}, layer={self.layer}, site={self.site!r})")

    def encode(self, x: Any) -> np.ndarray:
        """Feature activations.

        Args:
            x: (..., d_in) activations (float; converted to float32 C-contiguous).

        Returns:
            (..., d_sae) float32.
        """
        return kernels.sae_encode(self, x)

    def decode(self, f: Any) -> np.ndarray:
        """Reconstruction ``f @ W_dec + b_dec``.

        Args:
            f: (..., d_sae) feature activations.

        Returns:
            (..., d_in) float32.
        """
        arr = kernels.as_float32("f", f)
        if arr.ndim < 1 or arr.shape[-1] != self.d_sae:
            raise ValueError(f"f has shape {arr.shape} but the SAE has d_sae={self.d_sae}")
        return arr @ self.W_dec + self.b_dec

    def encode_pooled(self, x: Any, mask: Any = None, mode: str = "max") -> np.ndarray:
        """Encode whole sequences and pool the masked tokens (fused, blocked over d_sae).

        Args:
            x: (n_seq, n_tok, d_in) activations.
            mask: (n_seq, n_tok) bool, True = pool the token; None = every token.
            mode: "max" or "mean"; a sequence without tokens pools to 0.

        Returns:
            (n_seq, d_sae) float32.
        """
        return kernels.sae_encode_pooled(self, x, mask, mode)

    def pooler(self, n_seq: int, mode: str = "max", buffer_rows: int = 256) -> Any:
        """A streaming :class:`corrsteer.Pooler` over ``n_seq`` sequences for this SAE."""
        from corrsteer.pooling import Pooler

        return Pooler(self, n_seq, mode=mode, buffer_rows=buffer_rows)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> SAE:
        """Load an SAE file or directory (Gemma Scope 1/2, SAELens, ours): see sae/formats.py."""
        from corrsteer.sae import formats

        return formats.load_sae(path, **kwargs)

    def save(self, path: str | os.PathLike, **kwargs: Any) -> Any:
        """Save in the SAELens layout (cfg.json + sae_weights.safetensors): see sae/formats.py."""
        from corrsteer.sae import formats

        return formats.save_sae(self, path, **kwargs)
