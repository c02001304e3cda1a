"""Sparse autoencoders: the SAE itself, its files, releases, and training our own.

- :class:`SAE` and its frozen :class:`SAEConfig` (:mod:`~corrsteer.sae.model`);
- files: :mod:`~corrsteer.sae.formats` (Gemma Scope 1/2, SAELens, ours), releases:
  :mod:`~corrsteer.sae.hub` (``SAE.from_pretrained``), hook names:
  :mod:`~corrsteer.sae.hook_names`; SAELens objects and release names:
  :mod:`~corrsteer.sae.saelens` (``SAE.from_sae_lens``, :func:`as_sae`);
- training: :mod:`~corrsteer.sae.harvest` (activations), :mod:`~corrsteer.sae.train`
  (TopK SAEs), :mod:`~corrsteer.sae.defaults` (the cached default set of a model),
  :mod:`~corrsteer.sae.sets` (``--sae default`` or folders).

Importing this package does not import torch; the training modules do.

Example:
    >>> from corrsteer.sae import SAE, SAEConfig
"""

from corrsteer.sae.model import SAE, SAEConfig, as_sae, as_saes

__all__ = ["SAE", "SAEConfig", "as_sae", "as_saes"]
