"""gn_plugin.experiments.statistics: each function against scipy called directly or a hand count."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gn_plugin.errors import GnPluginError
from gn_plugin.experiments.statistics import (
    COMPARISON_COLUMNS,
    _t_test_power,  # the power formula itself
    compare,
    compare_all,
    difference_ci,
    holm,
    probability_of_improvement,
    seeds_needed,
    summarize,
    welch_p_value,
)

FID_A = [12.1, 13.4, 11.8, 12.9, 13.0, 12.4]
FID_B = [14.2, 13.1, 15.0, 14.4, 13.8]
# A lot of ties within and between the samples.
TIED_A = [1.0, 2.0, 2.0, 3.0, 5.0]
TIED_B = [2.0, 2.0, 3.0, 4.0]


def _direct_bootstrap(samples, statistic, method, seed=0, resamples=2000):
    return stats.bootstrap(
        samples,
        statistic,
        n_resamples=resamples,
        method=method,
        rng=np.random.default_rng(seed),
    ).confidence_interval


def _power(n: int, d: float, alpha: float = 0.05) -> float:
    """Textbook two-sided two-sample t-test power with n per group."""
    df = 2 * n - 2
    c = stats.t.ppf(1 - alpha / 2, df)
    nc = d * np.sqrt(n / 2)
    return 1 - stats.nct.cdf(c, df, nc) + stats.nct.cdf(-c, df, nc)


def _groups_with_effect(d: float) -> tuple[np.ndarray, np.ndarray]:
    """Two samples of 4 whose Cohen's d (pooled sd) is exactly ``d``."""
    a = np.array([-1.5, -0.5, 0.5, 1.5])
    return a, a + d * np.std(a, ddof=1)


# ---- summarize -----------------------------------------------------------------------------------


def test_summarize_matches_numpy_and_scipy_bca():
    s = summarize(FID_A, seed=3, resamples=2000)
    ci = _direct_bootstrap((FID_A,), np.mean, "BCa", seed=3)
    assert s.ci_method == "BCa"
    assert (s.ci_low, s.ci_high) == (ci.low, ci.high)
    assert s.n == 6
    assert s.mean == pytest.approx(np.mean(FID_A))
    assert s.median == pytest.approx(np.median(FID_A))
    assert s.std == pytest.approx(np.std(FID_A, ddof=1))
    assert s.ci_low < s.mean < s.ci_high


def test_summarize_single_value_has_no_spread():
    s = summarize([7.5])
    assert (s.n, s.mean, s.median) == (1, 7.5, 7.5)
    assert (s.std, s.ci_low, s.ci_high, s.ci_method) == (None, None, None, None)


def test_summarize_all_equal_falls_back_to_percentile():
    s = summarize([2.5] * 5, resamples=500)
    assert s.ci_method == "percentile"
    assert (s.ci_low, s.ci_high) == (2.5, 2.5)
    assert s.std == 0.0


def test_summarize_is_deterministic_per_seed():
    first = summarize(FID_A, seed=11, resamples=500)
    again = summarize(FID_A, seed=11, resamples=500)
    other = summarize(FID_A, seed=12, resamples=500)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, float("inf")], [[1.0, 2.0]]])
def test_bad_values_are_user_errors(bad):
    with pytest.raises(GnPluginError):
        summarize(bad)


# ---- difference_ci -------------------------------------------------------------------------------


def test_difference_ci_matches_scipy_two_sample_bca():
    ci = _direct_bootstrap(
        (FID_A, FID_B), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis), "BCa", seed=5
    )
    low, high = difference_ci(FID_A, FID_B, seed=5, resamples=2000)
    assert (low, high) == (ci.low, ci.high)
    assert low < np.mean(FID_A) - np.mean(FID_B) < high


def test_difference_ci_degenerate_and_small():
    assert difference_ci([1.0, 1.0, 1.0], [3.0, 3.0], resamples=200) == (-2.0, -2.0)
    assert difference_ci([1.0], FID_B) == (None, None)
    assert difference_ci(FID_A, [2.0]) == (None, None)


# ---- welch_p_value -------------------------------------------------------------------------------


def test_welch_p_value_matches_scipy():
    expected = stats.ttest_ind(FID_A, FID_B, equal_var=False).pvalue
    assert welch_p_value(FID_A, FID_B) == pytest.approx(expected, rel=1e-12)
    # Welch differs from Student's pooled test on unequal variances: it must be the Welch one.
    assert expected != pytest.approx(stats.ttest_ind(FID_A, FID_B).pvalue, rel=1e-6)


def test_welch_p_value_edge_cases():
    assert welch_p_value([1.0], FID_B) is None
    assert welch_p_value(FID_A, [1.0]) is None
    assert welch_p_value([2.0, 2.0], [2.0, 2.0, 2.0]) == 1.0
    assert welch_p_value([2.0, 2.0], [3.0, 3.0]) == 0.0


# ---- holm ----------------------------------------------------------------------------------------


def test_holm_known_example():
    # m = 4, sorted: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04;
    # the running max makes the last 0.06. Back in input order: [0.03, 0.06, 0.06, 0.02].
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_skips_none_caps_at_one_and_is_monotone():
    # None does not count: m = 2, so 0.01 -> 0.02 and 0.04 -> max(0.02, 0.04).
    assert holm([0.01, None, 0.04]) == [pytest.approx(0.02), None, pytest.approx(0.04)]
    # 0.5 x 2 = 1.0 (capped), then 0.6 x 1 = 0.6 is lifted to the running max 1.0.
    assert holm([0.6, 0.5]) == [1.0, 1.0]
    assert holm([]) == []
    with pytest.raises(GnPluginError):
        holm([0.1, 1.5])


# ---- probability_of_improvement ------------------------------------------------------------------


def _brute_force_improvement(a, b, lower_is_better):
    score = 0.0
    for x in a:
        for y in b:
            if x == y:
                score += 0.5
            elif (x < y) == lower_is_better:
                score += 1.0
    return score / (len(a) * len(b))


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_probability_of_improvement_with_ties_matches_brute_force(lower_is_better):
    got = probability_of_improvement(TIED_A, TIED_B, lower_is_better=lower_is_better)
    assert got == pytest.approx(_brute_force_improvement(TIED_A, TIED_B, lower_is_better))


def test_probability_of_improvement_directions():
    assert probability_of_improvement([1.0, 2.0], [3.0, 4.0], lower_is_better=True) == 1.0
    assert probability_of_improvement([1.0, 2.0], [3.0, 4.0], lower_is_better=False) == 0.0
    # 9 of the 20 pairs have a < b and 5 tie (weight 1/2): (9 + 2.5) / 20.
    assert probability_of_improvement(TIED_A, TIED_B, lower_is_better=True) == pytest.approx(0.575)


# ---- seeds_needed --------------------------------------------------------------------------------


def test_seeds_needed_cohen_table_value():
    # Cohen's (and G*Power's) table: d = 0.5, alpha = .05 two-sided, power .8 -> 64 per group.
    assert seeds_needed(*_groups_with_effect(0.5)) == 64


def test_power_is_alpha_without_effect_and_matches_textbook_formula():
    n = np.arange(2, 40)
    # Both tails count: with no effect a two-sided test rejects exactly alpha of the time.
    assert _t_test_power(n, 0.0, 0.05) == pytest.approx(np.full(n.shape, 0.05))
    # Moderate effects only: for large ones scipy's nct.cdf in the textbook form can return nan
    # (e.g. d = 2, n = 38), which the module's form must not.
    for d in (0.1, 0.5, 1.0):
        assert _t_test_power(n, d, 0.05) == pytest.approx([_power(int(k), d) for k in n])
    assert np.all(np.isfinite(_t_test_power(n, 2.0, 0.05)))


@pytest.mark.parametrize("d", [0.3, 0.8, 1.7])
def test_seeds_needed_reaches_power_at_n_and_not_before(d):
    n = seeds_needed(*_groups_with_effect(d))
    assert _power(n, d) >= 0.8 > _power(n - 1, d)


def test_seeds_needed_power_agrees_with_simulation():
    # Independent of the noncentral-t formula: simulate Welch's t-test with scipy.stats.power.
    d = 0.8
    n = seeds_needed(*_groups_with_effect(d))
    rng = np.random.default_rng(0)
    simulated = stats.power(
        lambda x, y, axis: stats.ttest_ind(x, y, equal_var=False, axis=axis).pvalue,
        (rng.standard_normal, lambda size: rng.standard_normal(size) + d),
        (n, n),
        significance=0.05,
        n_resamples=20_000,
    ).power
    assert simulated == pytest.approx(_power(n, d), abs=0.02)


def test_seeds_needed_larger_effect_needs_fewer_seeds():
    needed = [seeds_needed(*_groups_with_effect(d)) for d in (0.2, 0.5, 1.0, 2.0)]
    assert needed == sorted(needed, reverse=True)
    assert len(set(needed)) == len(needed)


def test_seeds_needed_edge_cases():
    assert seeds_needed(*_groups_with_effect(50.0)) == 2
    assert seeds_needed(FID_A, FID_A) is None
    assert seeds_needed([1.0], FID_B) is None
    assert seeds_needed([1.0, 1.0], [2.0, 2.0]) == 2
    assert seeds_needed(*_groups_with_effect(0.01), max_n=100) is None
    with pytest.raises(GnPluginError):
        seeds_needed(FID_A, FID_B, power=1.0)


# ---- compare / compare_all -----------------------------------------------------------------------


def test_compare_combines_the_functions():
    c = compare(FID_A, FID_B, lower_is_better=True, method_a="gn", method_b="sn", resamples=500)
    assert (c.method_a, c.method_b, c.n_a, c.n_b) == ("gn", "sn", 6, 5)
    assert c.diff == pytest.approx(np.mean(FID_A) - np.mean(FID_B))
    assert (c.ci_low, c.ci_high) == difference_ci(FID_A, FID_B, resamples=500)
    assert c.p_value == welch_p_value(FID_A, FID_B)
    assert c.prob_improvement == probability_of_improvement(FID_A, FID_B, lower_is_better=True)
    assert c.seeds_needed == seeds_needed(FID_A, FID_B)
    assert (c.p_holm, c.verdict) == (None, None)


@pytest.mark.parametrize(
    "lower_is_better, verdicts",
    [
        (True, ["gn better", "gn better", "inconclusive"]),
        (False, ["sn better", "sn-copy better", "inconclusive"]),
    ],
)
def test_compare_all_verdicts(lower_is_better, verdicts):
    groups = {
        "gn": [10.0, 10.2, 9.9, 10.1, 10.05],
        "sn": [15.0, 15.3, 14.8, 15.1, 15.2],
        "sn-copy": [15.0, 15.3, 14.8, 15.1, 15.2],
    }
    rows = compare_all(groups, lower_is_better=lower_is_better, resamples=300)
    assert [(r.method_a, r.method_b) for r in rows] == [
        ("gn", "sn"),
        ("gn", "sn-copy"),
        ("sn", "sn-copy"),
    ]
    assert [r.p_holm for r in rows] == holm([r.p_value for r in rows])
    assert [r.verdict for r in rows] == verdicts
    assert list(rows[0].as_row()) == COMPARISON_COLUMNS
    assert rows[0].as_row()["verdict"] == verdicts[0]


def test_compare_all_holm_can_overturn_a_raw_significance():
    # Raw Welch p: a-b 0.023, a-c 0.80, b-c 0.031; Holm: 0.023 x 3 = 0.070, 0.031 x 2 = 0.062
    # lifted to 0.070, so neither raw "significant" pair survives the correction.
    groups = {"a": [1.0, 1.2, 0.9, 1.1], "b": [1.3, 1.6, 1.2, 1.5], "c": [1.0, 1.25, 0.95, 1.1]}
    rows = compare_all(groups, lower_is_better=True, resamples=300)
    by_pair = {(r.method_a, r.method_b): r for r in rows}
    for pair in (by_pair[("a", "b")], by_pair[("b", "c")]):
        assert pair.p_value < 0.05 <= pair.p_holm
        assert pair.verdict == "inconclusive"
