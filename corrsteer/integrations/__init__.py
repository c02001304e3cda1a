"""Where corrsteer meets other tools: lm-evaluation-harness (and, through them, their users).

- :mod:`~corrsteer.integrations.lm_harness`: a ``corrsteer`` model type for
  lm-evaluation-harness (``pip install 'corrsteer[lmeval]'``): any lm-eval task with a
  selection or a llama.cpp control vector steering the generation positions.

The llama.cpp control-vector file itself is :mod:`corrsteer.storage.control_vector`
(``Selection.to_gguf`` / ``Selection.from_gguf``); SAELens SAEs convert in
:mod:`corrsteer.sae.saelens`. Importing this package imports none of the optional tools.
"""

__all__: list[str] = []
