"""gradpath.suite.analysis.statistics against textbook cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradpath.suite.analysis import statistics as S


def test_wilson_interval_matches_the_formula_by_hand():
    # Wilson (1927): centre (p + z^2/2n) / (1 + z^2/n), half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
    k, n, z = 3, 10, 1.959963984540054
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low, high = S.wilson_interval(k, n)
    assert low == pytest.approx(centre - half, abs=1e-9)
    assert high == pytest.approx(centre + half, abs=1e-9)
    assert S.wilson_interval(0, 10)[0] == 0.0 and S.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_paired_comparison_reproduces_scipys_wilcoxon_example():
    # scipy.stats.wilcoxon's documented example (Conover): the 15 height differences give p = 0.0413 (exact)
    d = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]) / 100
    seeds = pd.RangeIndex(15)
    b = pd.Series(np.full(15, 1e-2), index=seeds)
    a = pd.Series(1e-2 * 10 ** d, index=seeds)
    c = S.paired_comparison(a, b)
    assert c.paired and c.n == 15
    assert c.p_value == pytest.approx(0.041259765625)
    assert c.ratio.value == pytest.approx(10 ** d.mean())
    assert c.ratio.low < c.ratio.value < c.ratio.high
    assert c.improvement.value == pytest.approx(2 / 15)  # a is lower on the two negative differences


def test_pairing_is_by_seed_not_by_position():
    rng = np.random.default_rng(0)
    base = 10 ** rng.normal(-2, 0.3, 10)
    a = pd.Series(base * 0.5, index=range(10))
    b = pd.Series(base, index=range(10))
    shuffled = b.sample(frac=1, random_state=1)
    for other in (b, shuffled):
        c = S.paired_comparison(a, other)
        assert c.ratio.value == pytest.approx(0.5)
        assert c.improvement.value == 1.0
    # a seed present in one method only is left out of the pairs
    assert S.paired_comparison(a, b.drop(index=[3, 4])).n == 8


def test_geometric_mean_interval_of_a_known_lognormal():
    # log10 error ~ N(-2, 0.5): the 95% interval of the mean log error is about +-1.96 * 0.5 / sqrt(n)
    n = 400
    logs = np.random.default_rng(42).normal(-2.0, 0.5, n)
    est = S.geometric_mean(10 ** logs)
    low, high = math.log10(est.low), math.log10(est.high)
    assert low < -2.0 < high
    assert (high - low) / 2 == pytest.approx(1.96 * 0.5 / math.sqrt(n), rel=0.2)
    assert est.value == pytest.approx(10 ** logs.mean())


def test_bootstrap_is_seeded_so_a_rebuild_is_identical():
    errors = [0.011, 0.02, 0.009, 0.3, 0.012]
    assert S.cell_summary(errors) == S.cell_summary(errors)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.floats(min_value=1e-8, max_value=1e3), min_size=2, max_size=12))
def test_no_interval_bound_is_negative_for_a_positive_error(errors):
    s = S.cell_summary(errors)
    for name in ("median", "geomean"):
        assert 0 < s[f"{name}_low"] <= s[name] * (1 + 1e-9)
        assert s[name] <= s[f"{name}_high"] * (1 + 1e-9)
    assert 0 <= s["failure_low"] <= s["failure_rate"] <= s["failure_high"] <= 1


def test_one_seed_and_no_seed_are_marked_not_computable():
    one = S.cell_summary([0.1])
    assert one["n"] == 1 and one["mean"] == 0.1 and math.isnan(one["geomean_low"])
    assert "one seed" in one["stats_note"]
    none = S.cell_summary([])
    assert none["n"] == 0 and math.isnan(none["mean"]) and "no seed" in none["stats_note"]
    assert "too few to test" in S.paper_consistency([0.1], 0.1).note
    assert "too few to test" in S.paper_consistency([0.1, 0.11, 0.12], 0.1).note
    assert "no paired test" in S.paired_comparison(pd.Series([0.1]), pd.Series([0.2])).note


def test_failure_rate_counts_seeds_far_above_the_median():
    errors = [0.01, 0.011, 0.012, 0.009, 0.3]  # the last is 25x the median
    s = S.cell_summary(errors)
    assert s["failures"] == 1 and s["failure_rate"] == pytest.approx(0.2)
    assert (s["failure_low"], s["failure_high"]) == pytest.approx(S.wilson_interval(1, 5))
    gap = S.failure_gap([errors, [0.1, 0.12, 0.2]])
    assert gap["failed"] == 1 and gap["largest_below"] < gap["threshold"] < gap["smallest_above"]


def test_paper_consistency():
    rng = np.random.default_rng(3)
    ours = 10 ** rng.normal(-2, 0.2, 10)
    mean = ours.mean()
    assert S.paper_consistency(ours, mean).verdict == "consistent"
    high = S.paper_consistency(ours, mean / 5)
    assert high.verdict == "ours higher" and high.factor == pytest.approx(5)
    assert high.low < 1 < high.high and high.p_value < 0.05
    assert S.paper_consistency(ours, mean * 5).verdict == "ours lower"
    # a single published run (m = 1) is held to a wider interval than a 10-run mean
    single, ten = S.paper_consistency(ours, mean, 1), S.paper_consistency(ours, mean, 10)
    assert single.high / single.low > ten.high / ten.low


def test_unpaired_comparison():
    a, b = [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]
    c = S.unpaired_comparison(a, b)
    assert not c.paired and c.ratio.value == pytest.approx(0.1)
    assert c.improvement.value == 1.0  # every a below every b
    assert c.p_value == pytest.approx(0.1)  # exact Mann-Whitney U, n = 3 + 3, complete separation: 2/20


def test_adjust_pvalues_is_benjamini_hochberg_and_keeps_nan():
    q = S.adjust_pvalues([0.01, np.nan, 0.04, 0.03])
    # BH by hand: sorted 0.01, 0.03, 0.04 over m = 3 -> 0.03, 0.045, 0.04 -> monotone 0.03, 0.04, 0.04
    assert np.isnan(q[1])
    assert q[[0, 3, 2]] == pytest.approx([0.03, 0.04, 0.04])


def test_performance_profile_by_hand():
    values = pd.DataFrame({"A": [1.0, 2.0, 1.0], "B": [2.0, 1.0, np.nan]})
    profile = S.performance_profile(values, [1.0, 2.0, 4.0])
    assert profile["A"].tolist() == pytest.approx([2 / 3, 1.0, 1.0])
    assert profile["B"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3])  # a missing result never counts


def test_rank_stability_by_hand():
    errors = pd.DataFrame({"M4": [1, 1, 3], "M2": [2, 2, 1], "M1": [3, 3, 2]}, dtype=float)
    r = S.rank_stability(errors, ["M4", "M2", "M1"])
    assert (r.seeds, r.agree) == (3, 2)
    assert r.kendall_tau == pytest.approx((1 + 1 - 1 / 3) / 3)
    # Kendall's W by hand: rank sums 1+1+3=5, 2+2+1=5, 3+3+2=8; S = sum (R - 6)^2 = 6; W = 12 S / (m^2 (k^3 - k))
    assert r.kendall_w == pytest.approx(12 * 6 / (9 * 24))


def test_paper_consistency_has_about_its_nominal_size():
    # the published mean really is a 10-run mean of the seeds' distribution: a 5% test should flag it
    # about 5% of the time (uncorrected resampling of 10 seeds flagged it 10-13% of the time)
    rng = np.random.default_rng(11)
    flagged = 0
    for _ in range(300):
        ours = 10 ** rng.normal(-2, 0.15, 10)
        paper = (10 ** rng.normal(-2, 0.15, 10)).mean()
        flagged += S.paper_consistency(ours, paper, 10).verdict != "consistent"
    assert 0.02 <= flagged / 300 <= 0.09
