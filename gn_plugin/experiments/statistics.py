"""Publishable statistics for per-seed benchmark results.

Each function takes the per-seed values of a metric for one or two methods (e.g. the final FID of
every seed) and returns plain Python numbers. The interval of a mean is Student's t interval, the
interval of a difference of means is Welch's, and p-values come from Welch's t-test: the difference
interval excludes 0 exactly when the test's p-value is below 1 − confidence, and both keep their
coverage at five seeds (``tests/test_statistics.py`` simulates it). Pairwise comparisons are
Holm-adjusted; equivalence is decided by two one-sided Welch tests (TOST) against a stated margin.
``lower_is_better`` gives the metric's direction: ``True`` for FID, ``False`` for IS.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from gn_plugin.errors import GnPluginError

__all__ = [
    "COMPARISON_COLUMNS",
    "INCONCLUSIVE",
    "EQUIVALENT",
    "Comparison",
    "Summary",
    "compare",
    "compare_all",
    "difference_ci",
    "holm",
    "mean_interval",
    "probability_of_improvement",
    "seeds_needed",
    "summarize",
    "tost_p_value",
    "welch_interval",
    "welch_p_value",
]

INCONCLUSIVE = "inconclusive"
EQUIVALENT = "equivalent"
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
    "margin",
    "tost_p",
    "tost_p_holm",
    "prob_improvement",
    "seeds_needed",
    "verdict",
]


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one method's per-seed values."""

    n: int
    mean: float
    median: float
    std: float | None  # sample std (ddof=1); None for a single value
    ci_low: float | None  # Student's t interval of the mean; None for a single value
    ci_high: float | None
    ci_method: str | None  # "t"; None when there is no CI


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
    ci_low: float | None  # Welch's interval of diff
    ci_high: float | None
    p_value: float | None  # Welch's t-test, unadjusted
    prob_improvement: float  # P(a seed of A beats a seed of B)
    seeds_needed: int | None
    margin: float | None = None  # the equivalence margin, when one is stated
    tost_p: float | None = None  # TOST p-value of |diff| < margin, unadjusted
    p_holm: float | None = None  # filled by compare_all
    tost_p_holm: float | None = None  # filled by compare_all
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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """scipy warns about precision loss on nearly constant samples; its results there are still right."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# -- intervals (vectorised along the last axis: one row per sample) ---------------------------------
def mean_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student's t interval of the mean of each row of ``values`` (at least 2 values per row)."""
    x = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.5 + confidence / 2, x.shape[-1] - 1) * x.std(axis=-1, ddof=1) / np.sqrt(x.shape[-1])
    mean = x.mean(axis=-1)
    return mean - half, mean + half


def welch_interval(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Welch's interval of ``mean(a) - mean(b)`` per row: the interval that inverts Welch's t-test.

    Where neither row varies, the difference is exact and the interval is that point.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    var_a = x.var(axis=-1, ddof=1) / x.shape[-1]
    var_b = y.var(axis=-1, ddof=1) / y.shape[-1]
    total = var_a + var_b
    with np.errstate(invalid="ignore", divide="ignore"):
        df = total**2 / (var_a**2 / (x.shape[-1] - 1) + var_b**2 / (y.shape[-1] - 1))
        half = np.where(total > 0, stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(total), 0.0)
    diff = x.mean(axis=-1) - y.mean(axis=-1)
    return diff - half, diff + half


# -- one method ------------------------------------------------------------------------------------
def summarize(values: Sequence[float], *, confidence: float = 0.95) -> Summary:
    """n, mean, median, sample std and Student's t interval of the mean of one method's seeds."""
    x = _sample(values)
    mean, median = float(np.mean(x)), float(np.median(x))
    if x.size < 2:
        return Summary(1, mean, median, None, None, None, None)
    low, high = mean_interval(x, confidence)
    return Summary(x.size, mean, median, float(np.std(x, ddof=1)), float(low), float(high), "t")


# -- two methods -----------------------------------------------------------------------------------
def difference_ci(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """Welch's interval of ``mean(a) - mean(b)`` for independent samples; (None, None) if n < 2."""
    x, y = _sample(a), _sample(b)
    if x.size < 2 or y.size < 2:
        return None, None
    low, high = welch_interval(x, y, confidence)
    return float(low), float(high)


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
    with _quiet():
        return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def tost_p_value(a: Sequence[float], b: Sequence[float], margin: float) -> float | None:
    """Two one-sided Welch tests of equivalence: the p-value of ``|mean(a) - mean(b)| < margin``.

    The larger of the two one-sided p-values (H0: diff <= -margin, H0: diff >= margin); below alpha,
    the 1 - 2 alpha Welch interval of the difference lies inside (-margin, margin). None when either
    side has fewer than 2 values; exact (0 or 1) when neither side varies.
    """
    if not margin > 0:
        raise GnPluginError(f"an equivalence margin must be > 0, got {margin}")
    x, y = _sample(a), _sample(b)
    if x.size < 2 or y.size < 2:
        return None
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return 0.0 if abs(x[0] - y[0]) < margin else 1.0
    with _quiet():
        above = stats.ttest_ind(x + margin, y, equal_var=False, alternative="greater").pvalue
        below = stats.ttest_ind(x - margin, y, equal_var=False, alternative="less").pvalue
    return float(max(above, below))


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


def _welch_power(n: np.ndarray, diff: float, var_a: float, var_b: float, alpha: float) -> np.ndarray:
    """Power of the two-sided Welch's t-test with ``n`` seeds per group, for a true difference ``diff``
    and true variances ``var_a`` and ``var_b`` (noncentral t with the Welch–Satterthwaite df)."""
    total = var_a + var_b
    df = (n - 1) * total**2 / (var_a**2 + var_b**2)
    critical = stats.t.isf(alpha / 2, df)
    noncentrality = abs(diff) / np.sqrt(total / n)
    # Lower tail P(T < -c) written as P(-T > c) with -T ~ nct(df, -nc): scipy's nct.cdf returns
    # nan for some large noncentralities far out in the left tail, while this form does not.
    return stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality)


def _t_test_power(n: np.ndarray, effect_size: float, alpha: float) -> np.ndarray:
    """Power of the two-sided two-sample t-test with ``n`` seeds per group and Cohen's d ``effect_size``
    (Welch's test with equal variances, whose df are then the pooled test's 2n - 2)."""
    return _welch_power(n, effect_size, 1.0, 1.0, alpha)


def seeds_needed(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    more_than: int = 1,
    max_n: int = 10_000,
) -> int | None:
    """Seeds per method, more than ``more_than``, at which Welch's t-test would detect the observed
    difference of means with probability ``power``, taking the observed means and variances as the truth.

    The power is the noncentral t's with the Welch–Satterthwaite degrees of freedom, equal group sizes.
    Pass the seeds already run as ``more_than`` for a pair they did not decide: more seeds, not the same
    ones, are what can decide it. None when the difference is 0, when either side has fewer than 2 values
    (no variance), or when even ``max_n`` seeds would not reach the power. A nonzero difference with
    no variance on either side returns the first candidate.
    """
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise GnPluginError(f"alpha and power must lie in (0, 1), got {alpha} and {power}")
    x, y = _sample(a), _sample(b)
    if x.size < 2 or y.size < 2:
        return None
    diff = abs(float(np.mean(x) - np.mean(y)))
    start = max(2, more_than + 1)
    if diff == 0:
        return None
    var_a, var_b = float(np.var(x, ddof=1)), float(np.var(y, ddof=1))
    if var_a + var_b == 0:
        return start
    # Upward search in blocks that double in size, so a small answer costs few evaluations.
    while start <= max_n:
        n = np.arange(start, min(2 * start, max_n) + 1)
        reached = np.flatnonzero(_welch_power(n, diff, var_a, var_b, alpha) >= power)
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
    margin: float | None = None,
    seeds_alpha: float | None = None,
) -> Comparison:
    """Compare two methods' per-seed values; the interval has confidence ``1 - alpha``.

    With a ``margin``, also the TOST p-value of equivalence within it. ``seeds_needed`` is computed at
    ``seeds_alpha`` (default ``alpha``) for more seeds than either side has. ``p_holm``,
    ``tost_p_holm`` and ``verdict`` are left None; :func:`compare_all` fills them.
    """
    x, y = _sample(a), _sample(b)
    mean_a, mean_b = float(np.mean(x)), float(np.mean(y))
    ci_low, ci_high = difference_ci(x, y, confidence=1 - alpha)
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
        seeds_needed=seeds_needed(x, y, alpha=seeds_alpha or alpha, more_than=max(x.size, y.size)),
        margin=margin,
        tost_p=None if margin is None else tost_p_value(x, y, margin),
    )


def _verdict(comparison: Comparison, *, lower_is_better: bool, alpha: float) -> str:
    if comparison.p_holm is not None and comparison.p_holm < alpha:
        a_better = comparison.diff < 0 if lower_is_better else comparison.diff > 0
        return f"{comparison.method_a if a_better else comparison.method_b} better"
    if comparison.tost_p_holm is not None and comparison.tost_p_holm < alpha:
        return EQUIVALENT
    return INCONCLUSIVE


def compare_all(
    groups: dict[str, Sequence[float]],
    *,
    lower_is_better: bool,
    alpha: float = 0.05,
    margin: float | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[Comparison]:
    """Every unordered pair of methods (in the dict's order), or only ``pairs``, Holm-adjusted over the
    pairs compared, with a verdict.

    The verdict is ``"<name> better"`` when the Holm-adjusted Welch p-value is below ``alpha``; else,
    with a ``margin``, ``"equivalent"`` when the Holm-adjusted TOST p-value is below ``alpha``; else
    ``"inconclusive"``, which says that these seeds cannot tell, never that the methods are equal.
    ``seeds_needed`` is computed at alpha / (pairs compared), the level of Holm's strictest step.
    """
    compared = list(itertools.combinations(groups, 2) if pairs is None else pairs)
    comparisons = [
        compare(
            groups[name_a],
            groups[name_b],
            lower_is_better=lower_is_better,
            method_a=name_a,
            method_b=name_b,
            alpha=alpha,
            margin=margin,
            seeds_alpha=alpha / max(len(compared), 1),
        )
        for name_a, name_b in compared
    ]
    adjusted = holm([c.p_value for c in comparisons])
    equivalence = holm([c.tost_p for c in comparisons])
    with_p = [replace(c, p_holm=p, tost_p_holm=q) for c, p, q in zip(comparisons, adjusted, equivalence)]
    return [
        replace(c, verdict=_verdict(c, lower_is_better=lower_is_better, alpha=alpha))
        for c in with_p
    ]
