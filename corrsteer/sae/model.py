"""The SAE: a frozen configuration, read-only weights, and encode/decode through the C core.

``pre = (x - b_dec·[apply_b_dec_to_input]) @ W_enc + b_enc``, then JumpReLU
(``pre · 1[pre > threshold]``), ReLU (``max(pre, 0)``) or TopK (the ``k`` largest
entries of ``pre``, ties to the lower index, ReLU'd; the rest 0). Decode:
``x_hat = f @ W_dec + b_dec`` (METHOD.md §1).

An SAE never changes after construction: its :class:`SAEConfig` is a frozen dataclass and
its weight arrays are read-only float32 copies validated once (finite, right shapes,
thresholds >= 0), so no later assignment can slip a NaN or a wrong architecture past the
checks. :meth:`SAE.replace` gives a new SAE with other config fields (e.g. the layer a
trainer produced it for), sharing the same weights.

Example:
    >>> import numpy as np, corrsteer
    >>> eye = np.eye(3, dtype=np.float32)
    >>> sae = corrsteer.SAE(eye, np.zeros(3, np.float32), eye, np.zeros(3, np.float32),
    ...                     threshold=np.full(3, 0.5, np.float32))
    >>> sae.encode(np.array([1.0, 0.4, -2.0], np.float32))
    array([1., 0., 0.], dtype=float32)
    >>> sae.cfg.architecture, sae.cfg.d_sae
    ('jumprelu', 3)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from corrsteer.config import ARCHITECTURES, SITES
from corrsteer.core import kernels
from corrsteer.errors import CorrsteerError
from corrsteer.sae import formats
from corrsteer.sae.hook_names import hook_name_for, parse_hook_name


@dataclass(frozen=True)
class SAEConfig:
    """What an SAE is, besides its weights (checked on construction)."""

    d_in: int  # residual width the SAE reads (= d_model)
    d_sae: int  # number of latents
    architecture: str = "jumprelu"  # jumprelu | relu | topk (METHOD.md §1)
    k: int | None = None  # active latents per row, topk only (1 <= k <= d_sae)
    apply_b_dec_to_input: bool = False  # subtract b_dec from x before encoding
    hook_name: str | None = None  # SAELens hook name, e.g. "blocks.12.hook_resid_post"
    layer: int | None = None  # decoder layer whose site the SAE reads (None: from hook_name, or unknown)
    site: str | None = None  # one of config.SITES (None: from hook_name, else "resid_post")
    model_name: str | None = None  # the model the SAE was trained on, when known

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.architecture == "topk":
            if isinstance(self.k, (bool, np.bool_)) or not isinstance(self.k, (int, np.integer)):
                raise ValueError(f"k must be an int in [1, d_sae={self.d_sae}] for architecture='topk', got {self.k!r}")
            if not 1 <= self.k <= self.d_sae:
                raise ValueError(f"k must lie in [1, d_sae={self.d_sae}] for architecture='topk', got {self.k}")
            object.__setattr__(self, "k", int(self.k))
        elif self.k is not None:
            raise ValueError(f"k={self.k!r} is only meaningful for architecture='topk' (this SAE is "
                             f"{self.architecture!r}); pass k=None")
        if not isinstance(self.apply_b_dec_to_input, (bool, np.bool_)):
            raise TypeError(f"apply_b_dec_to_input must be a bool, got {self.apply_b_dec_to_input!r}")
        object.__setattr__(self, "apply_b_dec_to_input", bool(self.apply_b_dec_to_input))
        if self.site is not None and self.site not in SITES:
            raise ValueError(f"site must be one of {SITES}, got {self.site!r}")
        if self.layer is not None:
            if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)) or self.layer < 0:
                raise ValueError(f"layer must be a non-negative int or None, got {self.layer!r}")
            object.__setattr__(self, "layer", int(self.layer))
        if self.hook_name is not None:
            if not isinstance(self.hook_name, str):
                raise TypeError(f"hook_name must be a str or None, got {self.hook_name!r}")
            layer, site = parse_hook_name(self.hook_name)
            if (self.layer is not None and layer != self.layer) or (self.site is not None and site != self.site):
                raise ValueError(f"hook_name {self.hook_name!r} says layer {layer} ({site}) but the config says "
                                 f"layer {self.layer} ({self.site}); give one, or make them agree")
            object.__setattr__(self, "layer", layer)
            object.__setattr__(self, "site", site)
        else:
            if self.site is None:
                object.__setattr__(self, "site", "resid_post")
            if self.layer is not None:
                object.__setattr__(self, "hook_name", hook_name_for(self.layer, self.site))


def _weight(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only float32 C-contiguous copy of ``value`` with the given shape, finite."""
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point values, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape} but must have shape {shape}")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or Inf; the SAE weights are corrupt")
    out.flags.writeable = False
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
        architecture, k, apply_b_dec_to_input, hook_name, layer, site, model_name:
            the fields of :class:`SAEConfig` (or pass ``cfg=`` instead).
        cfg: a complete :class:`SAEConfig`; ``d_in``/``d_sae`` must match ``W_enc``.
        meta: free-form metadata (source file, training metrics); the only mutable part.

    The weight arrays are read-only float32 C-contiguous copies, so the C core reads them
    without another copy and nothing can change them behind the checks.
    """

    def __init__(self, W_enc: Any, b_enc: Any, W_dec: Any, b_dec: Any, threshold: Any = None,
                 architecture: str = "jumprelu", k: int | None = None, apply_b_dec_to_input: bool = False, *,
                 hook_name: str | None = None, layer: int | None = None, site: str | None = None,
                 model_name: str | None = None, cfg: SAEConfig | None = None, meta: dict | None = None) -> None:
        enc = np.asarray(W_enc)
        if enc.ndim != 2 or enc.shape[0] < 1 or enc.shape[1] < 1:
            raise ValueError(f"W_enc must be 2-D (d_in, d_sae) with both >= 1, got shape {enc.shape}")
        d_in, d_sae = enc.shape
        if cfg is None:
            cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture=architecture,
                            k=k if architecture == "topk" else None, apply_b_dec_to_input=apply_b_dec_to_input,
                            hook_name=hook_name, layer=layer, site=site, model_name=model_name)
        elif not isinstance(cfg, SAEConfig) or (cfg.d_in, cfg.d_sae) != (d_in, d_sae):
            raise ValueError(f"cfg must be an SAEConfig with d_in={d_in}, d_sae={d_sae} (the shape of W_enc), "
                             f"got {cfg!r}")
        self._cfg = cfg
        self._W_enc = _weight("W_enc", enc, (d_in, d_sae))
        self._b_enc = _weight("b_enc", b_enc, (d_sae,))
        self._W_dec = _weight("W_dec", W_dec, (d_sae, d_in))
        self._b_dec = _weight("b_dec", b_dec, (d_in,))
        self._threshold: np.ndarray | None = None
        if cfg.architecture == "jumprelu":
            if threshold is None:
                raise ValueError("threshold is required for architecture='jumprelu' "
                                 "(pass the (d_sae,) JumpReLU thresholds)")
            self._threshold = _weight("threshold", threshold, (d_sae,))
            if (self._threshold < 0).any():
                raise ValueError("threshold has negative entries; JumpReLU thresholds must be "
                                 ">= 0 (clamp them with np.maximum(threshold, 0))")
        self.meta: dict = dict(meta) if meta else {}

    # ------------------------------------------------------------------ read-only view
    cfg = property(lambda self: self._cfg, doc="The frozen :class:`SAEConfig`.")
    W_enc = property(lambda self: self._W_enc, doc="(d_in, d_sae) float32, read-only.")
    b_enc = property(lambda self: self._b_enc, doc="(d_sae,) float32, read-only.")
    W_dec = property(lambda self: self._W_dec, doc="(d_sae, d_in) float32, read-only.")
    b_dec = property(lambda self: self._b_dec, doc="(d_in,) float32, read-only.")
    threshold = property(lambda self: self._threshold, doc="(d_sae,) float32 JumpReLU thresholds, or None.")
    d_in = property(lambda self: self._cfg.d_in, doc="Residual width the SAE reads (= d_model).")
    d_sae = property(lambda self: self._cfg.d_sae, doc="Number of latents.")
    architecture = property(lambda self: self._cfg.architecture)
    k = property(lambda self: self._cfg.k)
    apply_b_dec_to_input = property(lambda self: self._cfg.apply_b_dec_to_input)
    hook_name = property(lambda self: self._cfg.hook_name)
    layer = property(lambda self: self._cfg.layer)
    site = property(lambda self: self._cfg.site)
    model_name = property(lambda self: self._cfg.model_name)

    def replace(self, **changes: Any) -> SAE:
        """A new SAE with :class:`SAEConfig` fields changed (weights shared, meta copied).

        ``replace(layer=12)`` also derives the hook name; give ``hook_name=None`` with it
        when the old name names another layer.
        """
        if "layer" in changes or "site" in changes:
            changes.setdefault("hook_name", None)
            if "site" not in changes:
                changes["site"] = self.site
        cfg = dataclasses.replace(self._cfg, **changes)
        return SAE(self._W_enc, self._b_enc, self._W_dec, self._b_dec, self._threshold, cfg=cfg, meta=self.meta)

    def __repr__(self) -> str:
        extra = f", k={self.k}" if self.k is not None else ""
        return (f"SAE(d_in={self.d_in}, d_sae={self.d_sae}, architecture={self.architecture!r}"
                f"{extra}, layer={self.layer}, site={self.site!r})")

    # ------------------------------------------------------------------------- compute
    def encode(self, x: Any) -> np.ndarray:
        """Feature activations: x (..., d_in) -> (..., d_sae) float32."""
        return kernels.sae_encode(self, x)

    def decode(self, f: Any) -> np.ndarray:
        """Reconstruction ``f @ W_dec + b_dec``: f (..., d_sae) -> (..., d_in) float32."""
        arr = kernels.as_float32("f", f)
        if arr.ndim < 1 or arr.shape[-1] != self.d_sae:
            raise ValueError(f"f has shape {arr.shape} but the SAE has d_sae={self.d_sae}")
        return arr @ self._W_dec + self._b_dec

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
        """A streaming :class:`corrsteer.core.Pooler` over ``n_seq`` sequences for this SAE."""
        from corrsteer.core import Pooler

        return Pooler(self, n_seq, mode=mode, buffer_rows=buffer_rows)

    # ----------------------------------------------------------------------------- files
    @classmethod
    def load(cls, path: str | os.PathLike, *, d_model: int | None = None, layer: int | None = None) -> SAE:
        """Load Gemma Scope 1/2, SAELens or corrsteer files (:mod:`corrsteer.sae.formats`).

        Args:
            path: the SAE's folder, or a file inside it.
            d_model: the width of the model it will be used with; a different ``d_in`` raises.
            layer: the layer, for files that do not say (Gemma Scope 1 outside ``layer_N/``);
                if the file names a layer too, they must agree.
        """
        found = formats.read_sae(path)
        cfg = found.cfg
        if layer is not None:
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
                raise ValueError(f"layer must be a non-negative int, got {layer!r}")
            if cfg.get("layer") is not None and cfg["layer"] != layer:
                raise ValueError(f"layer={layer} but {found.root!s} is an SAE for layer {cfg['layer']} "
                                 f"({cfg.get('hook_name')}); drop the layer= argument or load the right file")
            cfg = {**cfg, "layer": int(layer), "hook_name": None}
        sae = cls._from_files(found, cfg)
        if d_model is not None and sae.d_in != d_model:
            raise ValueError(f"SAE {str(found.root)!r} has d_in={sae.d_in} (field W_enc) but the model has "
                             f"d_model={d_model}; load the SAE trained for this model")
        return sae

    def save(self, path: str | os.PathLike, *, overwrite: bool = True) -> Any:
        """Save in the SAELens layout (cfg.json + sae_weights.safetensors), atomically; returns the folder."""
        weights = {"W_enc": self._W_enc, "W_dec": self._W_dec, "b_enc": self._b_enc, "b_dec": self._b_dec}
        if self._threshold is not None:
            weights["threshold"] = self._threshold
        return formats.write_saelens(path, dataclasses.asdict(self._cfg), weights, self.meta, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, release: str, sae_id: str, **kwargs: Any) -> SAE:
        """A released SAE by name, in SAELens' convention (``release``, ``sae_id``).

        Resolves Gemma Scope releases (``"gemma-scope-2b-pt-res"`` with
        ``"layer_12/width_16k/average_l0_82"``) and hub repo ids through the Hugging Face
        hub or its local cache (:mod:`corrsteer.sae.hub`); offline and uncached, it
        fails fast with a message saying so. With ``sae_lens`` installed, SAELens release
        names resolve through its pretrained directory (``"gemma-scope-2b-pt-res-canonical"``,
        ``"layer_12/width_16k/canonical"``); releases in formats only SAELens converts are
        loaded by SAELens and converted with :meth:`from_sae_lens`. ``**kwargs``: ``revision``, ``cache_dir``,
        ``endpoint``, ``timeout``, and ``d_model``/``layer`` as for :meth:`load`.
        """
        from corrsteer.sae import hub, saelens

        load_kw = {k: kwargs.pop(k) for k in ("d_model", "layer") if k in kwargs}
        found = saelens.lookup_release(release, sae_id)
        if found is not None and not found.readable:  # a format only SAELens converts
            sae = cls.from_sae_lens(saelens.load_with_sae_lens(release, sae_id))
            if load_kw.get("d_model") not in (None, sae.d_in):
                raise ValueError(f"{release}/{sae_id} has d_in={sae.d_in} but the model has d_model={load_kw['d_model']}")
            sae.meta["hub"] = {"release": release, "sae_id": sae_id, "repo_id": found.repo_id, "path": found.path}
            return sae
        repo, folder_id = (found.repo_id, found.path) if found is not None else (release, sae_id)
        folder, origin = hub.fetch_sae_files(repo, folder_id, **kwargs)
        sae = cls.load(folder, **load_kw)
        sae.meta["hub"] = origin if found is None else {**origin, "release": release, "saelens_sae_id": sae_id}
        return sae

    @classmethod
    def from_sae_lens(cls, sae: Any) -> SAE:
        """A ``sae_lens.SAE`` (standard/ReLU, JumpReLU, TopK) as a corrsteer SAE.

        Its ``cfg`` gives the hook, so the layer and site follow (``blocks.L.hook_resid_post``:
        the output of decoder layer L; ``hook_resid_pre``: its input). ``encode`` agrees with
        SAELens' ``encode``; options that would change the arithmetic are folded into the
        weights or refused (:mod:`corrsteer.sae.saelens`).

        Raises:
            TypeError: not a SAELens SAE.
            CorrsteerError: an unsupported architecture or option, or a hook corrsteer cannot
                attach to (``attn.hook_z``, per-head SAEs, transcoders).
        """
        from corrsteer.sae.saelens import sae_lens_files

        found = sae_lens_files(sae)
        return cls._from_files(found, found.cfg)

    @classmethod
    def _from_files(cls, found: Any, cfg: dict[str, Any]) -> SAE:
        weights = found.weights
        try:
            return cls(weights["W_enc"], weights["b_enc"], weights["W_dec"], weights["b_dec"],
                       weights.get("threshold"), cfg=SAEConfig(**cfg), meta=found.meta)
        except (ValueError, TypeError) as exc:
            raise CorrsteerError(f"{found.root}: the files do not form a valid SAE: {exc}") from exc


def as_sae(sae: Any) -> Any:
    """A SAELens SAE converted with :meth:`SAE.from_sae_lens`; anything else unchanged (checked by its user)."""
    from corrsteer.sae.saelens import is_sae_lens

    return SAE.from_sae_lens(sae) if is_sae_lens(sae) else sae


def as_saes(saes: Any) -> Any:
    """:func:`as_sae` on each SAE of a ``{layer: SAE}`` mapping or a list (the container's kind is kept)."""
    if isinstance(saes, Mapping):
        return {layer: as_sae(sae) for layer, sae in saes.items()}
    if isinstance(saes, (list, tuple)):
        return [as_sae(sae) for sae in saes]
    return saes
