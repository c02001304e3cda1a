"""The method, in the order of METHOD.md: generate, collect, select, evaluate.

- :mod:`~corrsteer.method.generation`: batched greedy generation with per-sequence stops;
- :mod:`~corrsteer.method.collection`: :func:`collect`, one generation pass -> one
  correlation accumulator per layer (checkpointed, resumable) (§2-§4), window by window
  (:mod:`~corrsteer.method.window`); what it keeps on disk: :mod:`~corrsteer.method.checkpoints`;
- :mod:`~corrsteer.method.distributed`: several ranks under torchrun, work dealt out in
  fixed units, results put back in order;
- :mod:`~corrsteer.method.control_state`: the extra state the controls need, filled in the
  same pass;
- :mod:`~corrsteer.method.selection`: :func:`select`, single / global / all / pruned (§5);
  :mod:`~corrsteer.method.features`: the :class:`Selection` it returns, which steers;
- :mod:`~corrsteer.method.baselines`: controls and baselines as selection methods;
- :mod:`~corrsteer.method.evaluation` and :mod:`~corrsteer.method.statistics`:
  :func:`evaluate`, unsteered vs steered on the same samples (§6).

The package imports nothing itself: ``corrsteer.method.statistics`` stays free of torch.
``corrsteer.collect``, ``select``, ``evaluate`` and ``Selection`` are the public names.
"""
