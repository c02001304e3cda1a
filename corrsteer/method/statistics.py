"""Statistics of a paired evaluation: unsteered vs steered on the same test samples (METHOD.md §6).

Every test sample is scored twice, without and with steering, so the two reward
vectors are *paired*: sample ``i`` of ``baseline`` and sample ``i`` of ``steered``
are the same question. All statistics here respect that pairing.

- **Score**: the mean reward (accuracy, refusal rate, ...).
- **Paired bootstrap 95% interval** of ``delta = mean(steered) - mean(baseline)``:
  draw ``n`` sample indices with replacement ``n_boot`` times (the same indices for
  both conditions, which is what keeps the pairing), take the mean of the per-sample
  differences ``d_i = steered_i - baseline_i`` on each draw, and report the 2.5% and
  97.5% quantiles of those means (percentile method, linear interpolation). Seeded
  with ``numpy.random.default_rng(seed)``, so the interval is reproducible.
- **Exact McNemar test**: only discordant pairs carry information. With
  ``b = POS`` (0 -> 1) and ``c = NEG`` (1 -> 0), under the null hypothesis of no effect
  ``b ~ Binomial(b + c, 1/2)``; the two-sided p-value is
  ``min(1, 2 * BinomCDF(min(b, c); b + c, 1/2))`` and 1 when ``b + c = 0``.
  Exact integer arithmetic up to 1000 discordant pairs, a log-space sum beyond.
- **Side-effect ratio** ``SER = NEG / (NEG + POS)``: among the samples whose reward
  changed, the share that steering broke. ``None`` (JSON null) when no reward changed,
  because the ratio is then undefined, not 0.

No scipy at runtime: the tests check these numbers against ``scipy.stats``.

Example:
    >>> r = compare([0, 0, 1, 1, 0], [1, 0, 1, 0, 1], n_boot=1000)
    >>> r["delta"], r["pos"], r["neg"], r["ser"]
    (0.2, 2, 1, 0.3333333333333333)
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "format_p",
    "compare",
    "paired_bootstrap_ci",
    "score_ci",
    "mcnemar_exact",
    "side_effect_ratio",
    "wilson_interval",
    "compare_draws",
    "paired_difference",
]

log = logging.getLogger(__name__)

_EXACT_MAX_N = 1000          # exact big-integer binomial sums up to this many discordant pairs
_BOOT_CHUNK_ELEMS = 1 << 22  # indices drawn per bootstrap chunk: ~16 MiB of int32 whatever n is
_Z95 = 1.959963984540054     # standard normal 97.5% quantile


def _as_rewards(name: str, values: object) -> np.ndarray:
    """Validate a 1-D sequence of 0/1 rewards and return it as ``(n,) int8``.

    Args:
        name: argument name used in error messages.
        values: list / tuple / array of 0, 1, True, False (floats 0.0 and 1.0 accepted).

    Returns:
        (n,) int8 array of zeros and ones.
    """
    if isinstance(values, (str, bytes)) or values is None:
        raise TypeError(f"{name} must be a sequence of 0/1 rewards, got {type(values).__name__}")
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be a flat sequence of 0/1 rewards: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one reward per sample), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: evaluation needs at least one test sample")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers 0/1, got dtype {arr.dtype} "
                        f"(first value {arr[0]!r}); convert rewards with int()")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(arr))[0])}; "
                         "every sample needs a reward of 0 or 1")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be binary (0 or 1), got {arr[i]!r} at index {i}; "
                         "threshold real-valued rewards before comparing")
    return arr.astype(np.int8)


def _check_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)):
        raise TypeError(f"n_boot must be an int, got {type(n_boot).__name__}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot} (10000 is the default)")
    return int(n_boot)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return int(seed)


def _bootstrap_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``d``: (n_boot,) float64.

    Indices are drawn in chunks so that memory stays ~16 MiB whatever ``n`` is.
    """
    n = d.shape[0]
    rows = max(1, _BOOT_CHUNK_ELEMS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int64 if n > 2**31 - 1 else np.int32)
        out[start:stop] = d[idx].sum(axis=1, dtype=np.int64 if d.dtype.kind in "iub" else np.float64) / n
    return out


def _percentile_interval(means: np.ndarray) -> list[float]:
    lo, hi = np.quantile(means, [0.025, 0.975])
    return [float(lo), float(hi)]


def paired_bootstrap_ci(baseline: Sequence[int], steered: Sequence[int], n_boot: int = 10000,
                        seed: int = 0) -> list[float]:
    """Paired bootstrap 95% percentile interval of ``mean(steered) - mean(baseline)``.

    Args:
        baseline: (n,) 0/1 rewards without steering.
        steered: (n,) 0/1 rewards with steering, same samples in the same order.
        n_boot: number of bootstrap resamples.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same interval.

    Returns:
        ``[lo, hi]``, floats in [-1, 1].
    """
    b = _as_rewards("baseline", baseline)
    s = _as_rewards("steered", steered)
    _check_same_length(b, s)
    d = s.astype(np.int8) - b.astype(np.int8)  # (n,) in {-1, 0, 1}
    means = _bootstrap_means(d, _check_n_boot(n_boot), np.random.default_rng(_check_seed(seed)))
    return _percentile_interval(means)


def score_ci(rewards: Sequence[int], n_boot: int = 10000, seed: int = 0) -> list[float]:
    """Bootstrap 95% percentile interval of one score (the mean of 0/1 rewards).

    Args:
        rewards: (n,) 0/1 rewards.
        n_boot: number of bootstrap resamples.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``[lo, hi]``, floats in [0, 1].
    """
    r = _as_rewards("rewards", rewards)
    means = _bootstrap_means(r, _check_n_boot(n_boot), np.random.default_rng(_check_seed(seed)))
    return _percentile_interval(means)


def wilson_interval(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n`` (95% by default).

    Better behaved than the normal interval near 0 and 1 and for small ``n``; used for
    per-category error bars, where only score and count are known.

    Args:
        k: number of successes, 0 <= k <= n.
        n: number of trials, n >= 1.
        z: normal quantile (1.96 for 95%).

    Returns:
        ``(lo, hi)`` with 0 <= lo <= k/n <= hi <= 1.
    """
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1 to form an interval, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and n={n}, got {k}")
    if not (z > 0 and math.isfinite(z)):
        raise ValueError(f"z must be a positive finite quantile, got {z}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _binom_half_cdf_exact(m: int, n: int) -> float:
    """P(X <= m) for X ~ Binomial(n, 1/2), exact integers (correctly rounded)."""
    total, term = 0, 1  # term = C(n, k)
    for k in range(m + 1):
        total += term
        term = term * (n - k) // (k + 1)
    return total / (1 << n)


def _binom_half_log_cdf(m: int, n: int) -> float:
    """log P(X <= m) for X ~ Binomial(n, 1/2) with m <= n/2, summed in log space.

    The largest term is C(n, m); the others are accumulated relative to it going down
    (ratio C(n, k-1)/C(n, k) = k/(n-k+1) < 1), stopping once they no longer matter.
    """
    log_top = math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1) - n * math.log(2.0)
    rel, term = 1.0, 1.0
    for k in range(m, 0, -1):
        term *= k / (n - k + 1)
        rel += term
        if term < 1e-17 * rel:
            break
    return log_top + math.log(rel)


def mcnemar_exact(pos: int, neg: int) -> float:
    """Exact two-sided McNemar p-value from the discordant-pair counts.

    Args:
        pos: samples that went 0 -> 1 with steering (b).
        neg: samples that went 1 -> 0 with steering (c).

    Returns:
        ``min(1, 2 * BinomCDF(min(b, c); b + c, 1/2))``; 1.0 when ``b + c == 0``.
    """
    for name, v in (("pos", pos), ("neg", neg)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int count, got {type(v).__name__}")
        if v < 0:
            raise ValueError(f"{name} must be a count >= 0, got {v}")
    n, m = int(pos) + int(neg), min(int(pos), int(neg))
    if n == 0:
        return 1.0
    if n <= _EXACT_MAX_N:
        return min(1.0, 2.0 * _binom_half_cdf_exact(m, n))
    return min(1.0, 2.0 * math.exp(_binom_half_log_cdf(m, n)))


def side_effect_ratio(pos: int, neg: int) -> float | None:
    """``NEG / (NEG + POS)``; ``None`` when no reward changed (undefined, not 0)."""
    if pos + neg == 0:
        return None
    return neg / (neg + pos)


def _check_same_length(b: np.ndarray, s: np.ndarray) -> None:
    if b.shape[0] != s.shape[0]:
        raise ValueError(f"baseline has {b.shape[0]} rewards but steered has {s.shape[0]}; "
                         "both must score the same test samples in the same order")


def _compare_arrays(b: np.ndarray, s: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    n = int(b.shape[0])
    pos = int(np.count_nonzero((b == 0) & (s == 1)))
    neg = int(np.count_nonzero((b == 1) & (s == 0)))
    d = s - b  # (n,) int8 in {-1, 0, 1}
    return {  # plain Python numbers: the dict goes straight into results.json
        "baseline": {"score": float(b.mean()), "n": n},
        "steered": {"score": float(s.mean()), "n": n},
        "delta": int(d.sum(dtype=np.int64)) / n,
        "ci95": _percentile_interval(_bootstrap_means(d, n_boot, rng)),
        "mcnemar_p": mcnemar_exact(pos, neg),
        "ser": side_effect_ratio(pos, neg),
        "pos": pos,
        "neg": neg,
    }


def compare(baseline: Sequence[int], steered: Sequence[int],
            categories: Sequence[str | None] | None = None, n_boot: int = 10000,
            seed: int = 0) -> dict:
    """Compare paired 0/1 rewards without and with steering.

    Args:
        baseline: (n,) 0/1 rewards without steering.
        steered: (n,) 0/1 rewards with steering on the same samples, same order.
        categories: (n,) category name per sample, or None. Samples whose category is
            None are counted overall but in no per-category row.
        n_boot: bootstrap resamples for the 95% intervals.
        seed: bootstrap seed. Category ``c`` uses ``default_rng([seed, crc32(c)])``, so a
            category's interval does not depend on which other categories exist.

    Returns:
        ``{"baseline": {"score", "n"}, "steered": {"score", "n"}, "delta", "ci95": [lo, hi],
        "mcnemar_p", "ser", "pos", "neg", "per_category": {cat: {same keys, no
        per_category}}}`` with plain Python numbers (JSON-ready); ``ser`` is None when no
        reward changed. Categories are sorted by name.
    """
    b = _as_rewards("baseline", baseline)
    s = _as_rewards("steered", steered)
    _check_same_length(b, s)
    n_boot, seed = _check_n_boot(n_boot), _check_seed(seed)
    out = _compare_arrays(b, s, n_boot, np.random.default_rng(seed))
    out["per_category"] = {}
    if categories is None:
        return out
    if isinstance(categories, (str, bytes)):
        raise TypeError("categories must be a sequence with one category per sample, not a string")
    cats = list(categories)
    if len(cats) != b.shape[0]:
        raise ValueError(f"categories has {len(cats)} entries but there are {b.shape[0]} samples; "
                         "give one category (or None) per sample")
    for i, c in enumerate(cats):
        if c is not None and not isinstance(c, str):
            raise TypeError(f"categories[{i}] must be a str or None, got {type(c).__name__}")
    labels = np.array(["" if c is None else c for c in cats], dtype=object)
    known = np.array([c is not None for c in cats])
    for cat in sorted({c for c in cats if c is not None}):
        sel = known & (labels == cat)
        rng = np.random.default_rng([seed, zlib.crc32(cat.encode("utf-8"))])
        out["per_category"][cat] = _compare_arrays(b[sel], s[sel], n_boot, rng)
    log.debug("compare: n=%d delta=%+.4f pos=%d neg=%d categories=%d",
              b.shape[0], out["delta"], out["pos"], out["neg"], len(out["per_category"]))
    return out


def compare_draws(baseline: Sequence[int], draws: Sequence[Sequence[int]], n_boot: int = 10000,
                  seed: int = 0) -> dict:
    """A control drawn several times (random features, shuffled rewards) against the unsteered baseline.

    One draw is not a control: it can look like an effect, or hide one. Each draw is compared
    with :func:`compare`; their mean is summarised on the same paired samples: the
    per-sample difference ``d_i = mean_k steered_{k,i} − baseline_i`` is bootstrapped over
    samples (95% percentile interval), and a sign-flip permutation test of ``mean(d) = 0``
    gives ``p`` (McNemar needs 0/1 outcomes and does not apply to a mean over draws).

    Args:
        baseline: (n,) 0/1 rewards without steering.
        draws: (n_draws, n) 0/1 rewards of each draw, the same samples in the same order.
        n_boot: bootstrap resamples and sign flips.
        seed: seed of both.

    Returns:
        ``{"n_draws", "draws": [compare() of each], "baseline", "steered" (mean score over draws),
        "delta", "ci95", "p", "spread": [min, max] of the draws' deltas}``.
    """
    b = _as_rewards("baseline", baseline)
    rows = [_as_rewards(f"draws[{k}]", d) for k, d in enumerate(draws)]
    if not rows:
        raise ValueError("draws is empty: give the rewards of at least one draw")
    for row in rows:
        _check_same_length(b, row)
    summary = paired_difference(np.mean(rows, axis=0), b, n_boot=n_boot, seed=seed)
    per_draw = [compare(b, row, n_boot=n_boot, seed=seed) for row in rows]
    deltas = [d["delta"] for d in per_draw]
    return {"n_draws": len(rows), "draws": per_draw, "baseline": per_draw[0]["baseline"],
            "steered": {"score": float(np.mean([d["steered"]["score"] for d in per_draw])), "n": int(b.shape[0])},
            "delta": summary["delta"], "ci95": summary["ci95"], "p": summary["p"],
            "spread": [float(min(deltas)), float(max(deltas))]}


def paired_difference(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0) -> dict:
    """``mean(a − b)`` over paired samples, a bootstrap 95% interval and a sign-flip permutation p.

    ``a`` and ``b`` are per-sample scores in [0, 1] (0/1 rewards, or a mean over draws):
    e.g. CorrSteer's rewards against the mean of the random-feature draws on the same prompts.
    The p-value is two-sided, ``(1 + #{|mean(s·d)| >= |mean(d)|}) / (1 + n_boot)`` over random
    signs ``s``, seeded.

    Returns:
        ``{"delta", "ci95": [lo, hi], "p", "n"}``.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.ndim != 1 or a64.shape != b64.shape or a64.size == 0:
        raise ValueError(f"a and b must be non-empty 1-D and of one length, got {a64.shape} and {b64.shape}")
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        raise ValueError("a and b must be finite scores")
    d = a64 - b64
    rng = np.random.default_rng(_check_seed(seed))
    n_boot = _check_n_boot(n_boot)
    ci = _percentile_interval(_bootstrap_means(d, n_boot, rng))
    observed, extreme = abs(d.mean()), 0
    rows = max(1, _BOOT_CHUNK_ELEMS // d.size)
    for start in range(0, n_boot, rows):
        flips = rng.choice(np.array([-1.0, 1.0]), size=(min(rows, n_boot - start), d.size))  # (rows, n)
        extreme += int((np.abs(flips @ d / d.size) >= observed - 1e-12).sum())
    return {"delta": float(d.mean()), "ci95": ci, "p": (1 + extreme) / (1 + n_boot), "n": int(d.size)}


def format_p(p: float) -> str:
    """A p-value for tables: ``0.41``, ``0.041``, ``0.0041``, ``3.2e-05``."""
    if p >= 0.995:
        return "1"
    if p >= 0.1:
        return f"{p:.2f}"
    if p >= 0.001:
        return f"{p:.2g}"
    return f"{p:.1e}"
