"""Hooks on a HuggingFace model that act at exactly the generation positions (METHOD.md §2).

- :mod:`~corrsteer.hooks.sites`: where on a decoder layer a hook attaches (``resid_post``,
  ``resid_pre``) and a one-pass reader of several sites;
- :mod:`~corrsteer.hooks.positions`: per-forward-call tracking of which columns are
  generation positions, shared by both context managers;
- :func:`capture`: SAE activations pooled per sequence while the model generates;
- :func:`steer`: vectors added to the residual stream while the model generates.
"""

from corrsteer.hooks.capture import Capture, capture
from corrsteer.hooks.steer import Steering, steer

__all__ = ["Capture", "Steering", "capture", "steer"]
