"""Publishable statistics for per-seed benchmark results.

Each function takes the per-seed values of a metric for one or two methods (e.g. the final FID of
every seed) and returns plain Python numbers. Confidence intervals are bootstrap intervals from
:func:`scipy.stats.bootstrap` (BCa, falling back to percentile where BCa is undefined), p-values
come from Welch's t-test, and pairwise comparisons are Holm-adjusted. ``lower_is_better`` gives
the metric's direction: ``True`` for FID, ``False`` for IS.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from gn_plugin.errors import GnPluginError

__all__ = [
    "COMPARISON_COLUMNS",
    "Comparison",
    "Summary",
    "compare",
    "compare_all",
    "difference_ci",
    "holm",
    "probability_of_improvement",
    "seeds_needed",
    "summarize",
    "welch_p_value",
]

COMPARISON_COLUMNS = [
    "method_a",
    "method_b",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "diff",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "prob_improvement",
    "verdict",
]


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one method's per-seed values."""

    n: int
    mean: float
    median: float
    std: float | None  # sample std (ddof=1); None for a single value
    ci_low: float | None  # bootstrap CI of the mean; None for a single value
    ci_high: float | None
    ci_method: str | None  # "BCa" or "percentile"; None when there is no CI


@dataclass(frozen=True)
class Comparison:
    """Method A against method B on one metric; ``diff`` is ``mean_a - mean_b``."""

    method_a: str
    method_b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float | None  # bootstrap CI of diff
    ci_high: float | None
    p_value: float | None  # Welch's t-test, unadjusted
    prob_improvement: float  # P(a seed of A beats a seed of B)
    seeds_needed: int | None
    p_holm: float | None = None  # filled by compare_all
    verdict: str | None = None  # filled by compare_all

    def as_row(self) -> dict[str, object]:
        """The fields named in :data:`COMPARISON_COLUMNS`, in that order."""
        return {column: getattr(self, column) for column in COMPARISON_COLUMNS}


def _sample(values: Sequence[float]) -> np.ndarray:
    """Per-seed values as a 1-D float array; empty or non-finite input is a user error."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise GnPluginError(f"expected a non-empty 1-D sequence of per-seed values, got {values!r}")
    if not np.all(np.isfinite(array)):
        raise GnPluginError(f"per-seed values must be finite, got {values!r}")
    return array


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _bootstrap_ci(
    samples: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    *,
    seed: int,
    resamples: int,
    confidence: float,
) -> tuple[float, float, str]:
    """BCa bootstrap CI, or the percentile CI where BCa is nan; returns (low, high, method)."""

    def interval(method: str) -> tuple[float, float]:
        ci = stats.bootstrap(
            samples,
            statistic,
            n_resamples=resamples,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        ).confidence_interval
        return float(ci.low), float(ci.high)

    with warnings.catch_warnings():
        # Degenerate data (e.g. all values equal) makes BCa's acceleration 0/0: scipy warns and
        # returns nan, which is handled below by falling back to the percentile interval.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = interval("BCa")
    if np.isfinite(low) and np.isfinite(high):
        return low, high, "BCa"
    return (*interval("percentile"), "percentile")


def summarize(
    values: Sequence[float], *, seed: int = 0, resamples: int = 10_000, confidence: float = 0.95
) -> Summary:
    """n, mean, median, sample std and a bootstrap CI of the mean of one method's seeds."""
    x = _sample(values)
    mean, median = float(np.mean(x)), float(np.median(x))
    if x.size < 2:
        return Summary(1, mean, median, None, None, None, None)
    low, high, method = _bootstrap_ci(
        (x,), np.mean, seed=seed, resamples=resamples, confidence=confidence
    )
    return Summary(x.size, mean, median, float(np.std(x, ddof=1)), low, high, method)


def difference_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> tuple[float | None, float | None]:
    """Bootstrap CI of ``mean(a) - mean(b)`` for independent samples; (None, None) if n < 2."""
    x, y = _sample(a), _sample(b)
    if x.size < 2 or y.size < 2:
        return None, None
    low, high, _ = _bootstrap_ci(
        (x, y), _mean_difference, seed=seed, resamples=resamples, confidence=confidence
    )
    return low, high


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Welch's t-test p-value; None when either side has fewer than 2 values.

    When neither side varies the t statistic is undefined (scipy returns nan); the difference is
    then exact, so this returns 1.0 if the means are equal and 0.0 otherwise.
    """
    x, y = _sample(a), _sample(b)
    if x.size < 2 or y.size < 2:
        return None
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return 1.0 if x[0] == y[0] else 0.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    None entries (comparisons without a p-value) stay None and do not count towards the number
    of tests. scipy has no Holm correction (``false_discovery_control`` is BH/BY).
    """
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    if any(not 0.0 <= p <= 1.0 for p, _ in present):
        raise GnPluginError(f"p-values must lie in [0, 1], got {list(p_values)!r}")
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running_max = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running_max = max(running_max, min(1.0, (m - rank) * p))
        adjusted[i] = running_max
    return adjusted


def probability_of_improvement(
    a: Sequence[float], b: Sequence[float], *, lower_is_better: bool
) -> float:
    """P(a seed of A beats a seed of B) over all pairs of seeds, ties counted half.

    This is the Mann–Whitney U of the better-oriented sample divided by ``n_a * n_b``.
    """
    x, y = _sample(a), _sample(b)
    # scipy's U belongs to its first argument: #(first > second) + #ties / 2.
    # A beats B at lower_is_better exactly when b > a.
    first, second = (y, x) if lower_is_better else (x, y)
    u = stats.mannwhitneyu(first, second, method="asymptotic").statistic
    return float(u) / (x.size * y.size)


def _t_test_power(n: np.ndarray, effect_size: float, alpha: float) -> np.ndarray:
    """Exact power of the two-sided two-sample t-test with ``n`` seeds per group."""
    df = 2 * n - 2
    critical = stats.t.isf(alpha / 2, df)
    noncentrality = effect_size * np.sqrt(n / 2)
    # Lower tail P(T < -c) written as P(-T > c) with -T ~ nct(df, -nc): scipy's nct.cdf returns
    # nan for some large noncentralities far out in the left tail, while this form does not.
    return stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality)


def seeds_needed(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    max_n: int = 10_000,
) -> int | None:
    """Seeds per group needed to detect the observed difference of means.

    Noncentral-t power calculation of a two-sided two-sample t-test with equal group sizes
    (where Welch's and Student's tests coincide), using Cohen's d = |mean(a) - mean(b)| over the
    pooled observed sd. The smallest n >= 2 whose power reaches ``power`` is returned.

    None when the difference is 0, when either side has fewer than 2 values (no sd), or when even
    ``max_n`` seeds would not reach the power. A nonzero difference with zero pooled sd returns 2.
    """
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise GnPluginError(f"alpha and power must lie in (0, 1), got {alpha} and {power}")
    x, y = _sample(a), _sample(b)
    if x.size < 2 or y.size < 2:
        return None
    diff = abs(float(np.mean(x) - np.mean(y)))
    if diff == 0:
        return None
    pooled_var = ((x.size - 1) * np.var(x, ddof=1) + (y.size - 1) * np.var(y, ddof=1)) / (
        x.size + y.size - 2
    )
    if pooled_var == 0:
        return 2
    effect_size = diff / float(np.sqrt(pooled_var))
    # Upward search in blocks that double in size, so a small answer costs few evaluations.
    start = 2
    while start <= max_n:
        n = np.arange(start, min(2 * start, max_n) + 1)
        reached = np.flatnonzero(_t_test_power(n, effect_size, alpha) >= power)
        if reached.size:
            return int(n[reached[0]])
        start = int(n[-1]) + 1
    return None


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    lower_is_better: bool,
    method_a: str = "A",
    method_b: str = "B",
    alpha: float = 0.05,
    seed: int = 0,
    resamples: int = 10_000,
) -> Comparison:
    """Compare two methods' per-seed values; the CI has confidence ``1 - alpha``.

    ``p_holm`` and ``verdict`` are left None; :func:`compare_all` fills them.
    """
    x, y = _sample(a), _sample(b)
    mean_a, mean_b = float(np.mean(x)), float(np.mean(y))
    ci_low, ci_high = difference_ci(x, y, seed=seed, resamples=resamples, confidence=1 - alpha)
    return Comparison(
        method_a=method_a,
        method_b=method_b,
        n_a=x.size,
        n_b=y.size,
        mean_a=mean_a,
        mean_b=mean_b,
        diff=mean_a - mean_b,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=welch_p_value(x, y),
        prob_improvement=probability_of_improvement(x, y, lower_is_better=lower_is_better),
        seeds_needed=seeds_needed(x, y, alpha=alpha),
    )


def _verdict(comparison: Comparison, *, lower_is_better: bool, alpha: float) -> str:
    if comparison.p_holm is None or comparison.p_holm >= alpha:
        return "inconclusive"
    a_better = comparison.diff < 0 if lower_is_better else comparison.diff > 0
    return f"{comparison.method_a if a_better else comparison.method_b} better"


def compare_all(
    groups: dict[str, Sequence[float]],
    *,
    lower_is_better: bool,
    alpha: float = 0.05,
    seed: int = 0,
    resamples: int = 10_000,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[Comparison]:
    """Every unordered pair of methods (in the dict's order), or only ``pairs``, Holm-adjusted over the
    pairs compared, with a verdict.

    The verdict is ``"<name> better"`` when the Holm-adjusted p-value is below ``alpha``, else
    ``"inconclusive"``.
    """
    compared = itertools.combinations(groups, 2) if pairs is None else pairs
    comparisons = [
        compare(
            groups[name_a],
            groups[name_b],
            lower_is_better=lower_is_better,
            method_a=name_a,
            method_b=name_b,
            alpha=alpha,
            seed=seed,
            resamples=resamples,
        )
        for name_a, name_b in compared
    ]
    adjusted = holm([c.p_value for c in comparisons])
    with_p = [replace(c, p_holm=p) for c, p in zip(comparisons, adjusted)]
    return [
        replace(c, verdict=_verdict(c, lower_is_better=lower_is_better, alpha=alpha))
        for c in with_p
    ]
