"""One-line verdicts and markdown tables of :func:`corrsteer.method.statistics.compare` results.

Every number comes from the result dicts; :func:`verdict` turns one into an honest
sentence, :func:`compare_table` several into a markdown table, :func:`format_p` formats a
p-value for both.

Example:
    >>> from corrsteer.method.statistics import compare
    >>> verdict(compare([0, 0, 1, 1], [0, 0, 1, 1], n_boot=100))
    'no change: steering altered no test reward (McNemar p = 1)'
"""

from __future__ import annotations

from collections.abc import Mapping

from corrsteer.method.statistics import format_p

__all__ = ["compare_table", "format_p", "verdict"]


def verdict(result: Mapping, alpha: float = 0.05) -> str:
    """One honest sentence on a :func:`compare` result, computed from its numbers.

    A change is called significant only when the McNemar test rejects at ``alpha`` *and*
    the bootstrap interval excludes 0; when the two disagree the sentence says so.

    Args:
        result: a dict with ``delta``, ``ci95``, ``mcnemar_p``, ``pos``, ``neg`` (as
            returned by :func:`compare` or read back from results.json).
        alpha: significance level of the McNemar test.

    Returns:
        e.g. ``"no significant change (Δ = +1.2 pp, McNemar p = 0.41; CI includes 0)"``.
    """
    delta = result.get("delta")
    if delta is None:
        return "no verdict: the result has no delta"
    pp = f"{100.0 * delta:+.1f} pp"
    pos, neg = result.get("pos"), result.get("neg")
    if pos == 0 and neg == 0:
        return "no change: steering altered no test reward (McNemar p = 1)"
    p = result.get("mcnemar_p")
    ci = result.get("ci95")
    p_txt = "McNemar p = n/a" if p is None else f"McNemar p = {format_p(p)}"
    if ci is None or p is None:
        return f"change of {pp} ({p_txt}); no interval, so no claim of significance"
    lo, hi = float(ci[0]), float(ci[1])
    ci_txt = f"95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}] pp"
    excludes = lo > 0 or hi < 0
    if p < alpha and excludes:
        word = "improved" if delta > 0 else "worsened"
        return f"{word} by {pp} ({ci_txt} excludes 0; {p_txt})"
    if p >= alpha and not excludes:
        return f"no significant change (Δ = {pp}, {p_txt}; CI includes 0)"
    side = "excludes" if excludes else "includes"
    return (f"weak evidence only: Δ = {pp}; the {ci_txt} {side} 0 but {p_txt} "
            f"is {'below' if p < alpha else 'not below'} {alpha:g}")


def _fmt_score(x: float | None) -> str:
    return "–" if x is None else f"{100.0 * x:.1f}"


def compare_table(results: Mapping[str, Mapping]) -> str:
    """A markdown table of several :func:`compare` results, one row per condition.

    Args:
        results: ``{row name: compare() dict}`` in display order (e.g. ``{"all": ..,
            "pruned": ..}`` or ``{"mmlu / pruned": ..}``). Missing keys render as "–".

    Returns:
        A markdown table: condition, baseline %, steered %, Δ pp, 95% CI pp, McNemar p,
        SER, POS/NEG, n. Scores are percentages, Δ and CI in percentage points.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict of row name -> compare() dict, "
                        f"got {type(results).__name__}")
    lines = ["| condition | baseline % | steered % | Δ pp | 95% CI (pp) | McNemar p | SER "
             "| POS / NEG | n |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        if not isinstance(r, Mapping):
            raise TypeError(f"results[{name!r}] must be a compare() dict, got {type(r).__name__}")
        base, steered = r.get("baseline") or {}, r.get("steered") or {}
        delta, ci, p, ser = r.get("delta"), r.get("ci95"), r.get("mcnemar_p"), r.get("ser")
        lines.append("| " + " | ".join([
            str(name).replace("|", "\\|"),
            _fmt_score(base.get("score")),
            _fmt_score(steered.get("score")),
            "–" if delta is None else f"{100.0 * delta:+.1f}",
            "–" if ci is None else f"[{100.0 * ci[0]:+.1f}, {100.0 * ci[1]:+.1f}]",
            "–" if p is None else format_p(p),
            "–" if ser is None else f"{ser:.2f}",
            "–" if r.get("pos") is None else f"{r.get('pos')} / {r.get('neg')}",
            str(base.get("n", steered.get("n", "–"))),
        ]) + " |")
    return "\n".join(lines) + "\n"
