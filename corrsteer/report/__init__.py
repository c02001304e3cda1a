"""What a run leaves for its reader: generation records, results summaries, report.md and figures.

- :mod:`~corrsteer.report.records`: the evaluated samples, one JSON object per line;
- :mod:`~corrsteer.report.summaries`: correlations and selections as results.json holds them;
- :mod:`~corrsteer.report.tables`: verdict sentences and markdown tables of comparisons;
- :mod:`~corrsteer.report.markdown`: ``report.md`` of a run or of a comparison;
- :mod:`~corrsteer.report.figures`: its point plots (PNG, matplotlib without pyplot).

The package imports nothing itself, so that records and tables need no matplotlib.
"""
