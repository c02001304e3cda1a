"""Experiments built on the method: controls and baselines, label features, SAE comparison, debiasing.

- :mod:`~corrsteer.studies.controls`: CorrSteer against its controls and baselines, one table;
- :mod:`~corrsteer.studies.labelled` and :mod:`~corrsteer.studies.labels`: features per label
  of a labelled text dataset (METHOD.md §7);
- :mod:`~corrsteer.studies.sae_comparison`: two SAE sets compared by the label features they find;
- :mod:`~corrsteer.studies.debiasing`: BBQ / EMGSD steered with pipeline or label features.
"""
