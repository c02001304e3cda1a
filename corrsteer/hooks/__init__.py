"""Hooks on a HuggingFace model that act at exactly the generation positions (METHOD.md §2).

Where on a decoder layer they attach is :mod:`corrsteer.models.sites`.

- :mod:`~corrsteer.hooks.positions`: per-forward-call tracking of which columns are
  generation positions, shared by both context managers;
- :func:`capture`: SAE activations pooled per sequence while the model generates;
- :func:`steer`: vectors added to the residual stream while the model generates.
"""

from corrsteer.hooks.capture import Capture, capture
from corrsteer.hooks.steer import Steering, steer

__all__ = ["Capture", "Steering", "capture", "steer"]
