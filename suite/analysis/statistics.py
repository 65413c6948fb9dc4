"""Statistics of training outcomes across seeds: cell summaries, paired and unpaired comparisons,
consistency with a published number, performance profiles and rank stability.

PINN errors across seeds are heavy-tailed: most seeds land near one value and one seed that stays in
a bad phase can move the mean by 5-10x (Helmholtz 100 x 7, M2). So beside the paper's statistic, the
arithmetic mean over seeds, everything here works on log10 error, where errors that span decades are
on a common scale:

- the geometric mean and the median, each with a 95% bootstrap interval (``scipy.stats.bootstrap``,
  BCa, 9,999 resamples, a fixed seed so that a report rebuilds identically; percentile where BCa is
  undefined); a geometric mean or median of positive errors is positive, and so are its bounds;
- a failure rate: the seeds whose error is more than :data:`FAILURE_FACTOR` times their cell's median
  (:func:`failure_gap` measures, on a runs table, why that factor separates the bad seeds), with a
  Wilson interval (``scipy.stats.binomtest``);
- two methods on the same seeds (same network, same seed: same initial weights and batches) are
  paired: the ratio of geometric means is the mean paired log difference, with a bootstrap interval,
  tested by the Wilcoxon signed-rank test on the paired log errors; the probability of improvement is
  the share of seeds on which the first method ends lower, with a Wilson interval;
- two methods on different networks are unpaired: ratio of geometric means with a two-sample bootstrap
  interval, the Mann-Whitney U test, and P(a < b) over all pairs of seeds (the U statistic's scale);
- p-values over one table's comparisons are adjusted by Benjamini-Hochberg
  (``scipy.stats.false_discovery_control``);
- ours against a published mean of m runs (:func:`paper_consistency`): is the published number a
  plausible m-seed mean of our seed distribution?

rliable (Agarwal et al., NeurIPS 2021) implements some of these for score-like data; scipy already
does each piece here, so gradpath needs no further dependency. Nothing here reads a store or trains.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
BOOTSTRAP_SEED = 20210101  # fixed: a report rebuilt from the same store is byte-identical
# A seed fails when it ends more than this many times above its cell's median error. On the paper
# preset's 736 runs, log10(error / cell median) is at most 0.52 for every seed but one, which lies at
# 1.62 (Helmholtz 100 x 7 M2, seed 9, stuck at u = 0 until step 38,400); failure_gap() recomputes this.
FAILURE_FACTOR = 10.0
MIN_SEEDS = 2  # below this a cell has no spread: intervals and tests are not computable
# Below this the bootstrap of a published mean cannot see a heavy tail: three seeds that agree to 1%
# would call a published mean 1.05x ours inconsistent. Cells with fewer seeds are not tested.
MIN_SEEDS_PAPER_TEST = 5


@dataclass(frozen=True)
class Estimate:
    """A statistic with its confidence interval; ``note`` says why a value is missing (NaN)."""

    value: float
    low: float = math.nan
    high: float = math.nan
    note: str = ""


def _rng() -> np.random.Generator:
    return np.random.default_rng(BOOTSTRAP_SEED)


def _log10(errors: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(errors, dtype=float)
    if np.any(~np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("errors must be finite and positive to take their logarithm")
    return np.log10(values)


def bootstrap_interval(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray],
                       paired: bool = False) -> tuple[float, float]:
    """95% bootstrap interval of ``statistic`` (vectorised over ``axis``) of ``samples``.

    BCa (bias-corrected and accelerated) where it is defined; where every resample gives the same
    value (no spread) or BCa's acceleration is undefined, the percentile interval.
    """
    samples = tuple(np.asarray(s, dtype=float) for s in samples)
    common = dict(statistic=statistic, paired=paired, vectorized=True, n_resamples=RESAMPLES,
                  confidence_level=CONFIDENCE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on degenerate resamples; we fall back below
        result = stats.bootstrap(samples, method="BCa", rng=_rng(), **common)
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if not (np.isfinite(low) and np.isfinite(high)):
            result = stats.bootstrap(samples, method="percentile", rng=_rng(), **common)
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):  # every resample equal: the value itself
        value = float(statistic(*samples, axis=-1))
        low = high = value
    return low, high


def _mean_log(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def geometric_mean(errors: Sequence[float]) -> Estimate:
    """Geometric mean of positive errors (10 to the mean log10 error) with a 95% bootstrap interval."""
    logs = _log10(errors)
    if len(logs) == 0:
        return Estimate(math.nan, note="no seed")
    value = float(10 ** logs.mean())
    if len(logs) < MIN_SEEDS:
        return Estimate(value, note="one seed: no interval")
    low, high = bootstrap_interval((logs,), _mean_log)
    return Estimate(value, float(10 ** low), float(10 ** high))


def median(errors: Sequence[float]) -> Estimate:
    """Median of positive errors with a 95% bootstrap interval (taken on log10 error, then mapped back)."""
    logs = _log10(errors)
    if len(logs) == 0:
        return Estimate(math.nan, note="no seed")
    value = float(np.median(np.asarray(errors, dtype=float)))
    if len(logs) < MIN_SEEDS:
        return Estimate(value, note="one seed: no interval")
    low, high = bootstrap_interval((logs,), _median)
    return Estimate(value, float(10 ** low), float(10 ** high))


def wilson_interval(successes: int, trials: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (NaN, NaN for no trials)."""
    if trials <= 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def failed_seeds(errors: Sequence[float], factor: float = FAILURE_FACTOR) -> np.ndarray:
    """A mask of the seeds whose error exceeds ``factor`` times the cell's median error."""
    values = np.asarray(errors, dtype=float)
    if len(values) < MIN_SEEDS:
        return np.zeros(len(values), dtype=bool)
    return values > factor * np.median(values)


def failure_rate(errors: Sequence[float], factor: float = FAILURE_FACTOR) -> Estimate:
    """Share of seeds that failed (:func:`failed_seeds`) with its Wilson interval."""
    n = len(errors)
    if n < MIN_SEEDS:
        return Estimate(math.nan, note="one seed: no median to fail against" if n else "no seed")
    k = int(failed_seeds(errors, factor).sum())
    low, high = wilson_interval(k, n)
    return Estimate(k / n, low, high)


def cell_summary(errors: Sequence[float]) -> dict[str, object]:
    """Everything a table shows of one cell's final errors (complete runs with a finite error).

    Keys: ``n``, ``mean`` (the paper's statistic), ``std`` (ddof 1), ``median`` and ``geomean`` with
    ``*_low``/``*_high`` bounds, ``failures``, ``failure_rate`` with bounds, and ``stats_note``: why a
    statistic is not computable ("" when all are).
    """
    values = np.asarray(errors, dtype=float)
    n = len(values)
    med, geo, fail = median(values), geometric_mean(values), failure_rate(values)
    notes = {"no seed": "no seed finished with a finite error", "one seed: no interval": "one seed: no interval"}
    note = notes.get(geo.note, geo.note)
    return {"n": n, "mean": float(values.mean()) if n else math.nan,
            "std": float(values.std(ddof=1)) if n >= MIN_SEEDS else math.nan,
            "median": med.value, "median_low": med.low, "median_high": med.high,
            "geomean": geo.value, "geomean_low": geo.low, "geomean_high": geo.high,
            "failures": int(failed_seeds(values).sum()),
            "failure_rate": fail.value, "failure_low": fail.low, "failure_high": fail.high,
            "stats_note": note}


def failure_gap(cells: Sequence[Sequence[float]], factor: float = FAILURE_FACTOR) -> dict[str, float]:
    """Why :data:`FAILURE_FACTOR` separates the failed seeds: over every cell with at least two seeds,
    the largest log10(error / cell median) below log10(factor) and the smallest above it, and counts."""
    deviations = np.concatenate([_log10(c) - np.log10(np.median(c)) for c in cells if len(c) >= MIN_SEEDS] or [[]])
    cut = math.log10(factor)
    below, above = deviations[deviations <= cut], deviations[deviations > cut]
    return {"runs": int(len(deviations)), "failed": int(len(above)),
            "largest_below": float(below.max()) if len(below) else math.nan,
            "smallest_above": float(above.min()) if len(above) else math.nan, "threshold": cut}


# -- two methods -------------------------------------------------------------------------------

def _diff_of_means(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _share_below(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(x < y) over all pairs of the two samples (ties count one half), vectorised over resamples."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    less = (x[..., :, None] < y[..., None, :]).mean(axis=(-2, -1))
    ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return less + 0.5 * ties


@dataclass(frozen=True)
class Comparison:
    """Method a against method b: ``ratio`` = geometric mean of a / of b (below 1: a is better),
    ``p_value`` of the test named in ``test``, ``improvement`` = P(a ends lower than b)."""

    n: int
    ratio: Estimate
    p_value: float
    test: str
    improvement: Estimate
    paired: bool
    note: str = ""


def _not_computable(n: int, paired: bool, note: str) -> Comparison:
    nan = Estimate(math.nan, note=note)
    return Comparison(n, nan, math.nan, "", nan, paired, note)


def paired_comparison(a: pd.Series, b: pd.Series) -> Comparison:
    """Two methods' errors indexed by seed, paired on the seeds both have (Wilcoxon signed-rank
    on the paired log10 errors, two-sided, exact for small n; P(a < b) over seeds with a Wilson interval)."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    n = len(both)
    if n < MIN_SEEDS:
        return _not_computable(n, True, f"{n} seed{'s' if n != 1 else ''} in both: no paired test")
    d = _log10(both["a"]) - _log10(both["b"])
    low, high = bootstrap_interval((d,), _mean_log)
    ratio = Estimate(float(10 ** d.mean()), float(10 ** low), float(10 ** high))
    p = 1.0 if np.all(d == 0) else float(stats.wilcoxon(d).pvalue)
    wins = float((d < 0).sum() + 0.5 * (d == 0).sum())
    lo, hi = wilson_interval(round(wins), n)
    return Comparison(n, ratio, p, "Wilcoxon signed-rank (paired by seed)", Estimate(wins / n, lo, hi), True)


def unpaired_comparison(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Two independent samples of errors (Mann-Whitney U on log10 error, two-sided; P(a < b) over
    all pairs with a two-sample bootstrap interval)."""
    x, y = _log10(a), _log10(b)
    n = min(len(x), len(y))
    if n < MIN_SEEDS:
        return _not_computable(n, False, "fewer than two seeds in one method: no test")
    low, high = bootstrap_interval((x, y), _diff_of_means)
    ratio = Estimate(float(10 ** (x.mean() - y.mean())), float(10 ** low), float(10 ** high))
    # exact where there are no ties (scipy's "auto" switches to the normal approximation above 8 seeds)
    ties = len(np.unique(np.concatenate([x, y]))) < len(x) + len(y)
    p = float(stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic" if ties else "exact").pvalue)
    share = float(_share_below(x, y))
    lo, hi = bootstrap_interval((x, y), _share_below)
    if lo == hi == share:  # every seed pair ordered alike: resampling cannot give an interval, so none is shown
        improvement = Estimate(share, note="every pair of seeds ordered alike: no interval")
    else:
        improvement = Estimate(share, lo, hi)
    return Comparison(n, ratio, p, "Mann-Whitney U (unpaired)", improvement, False)


def adjust_pvalues(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) over one family of tests; NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = stats.false_discovery_control(p[finite], method="bh")
    return out


# -- ours against a published number -----------------------------------------------------------

@dataclass(frozen=True)
class PaperConsistency:
    """Our seeds against a published mean of ``paper_runs`` runs.

    ``verdict`` is ``consistent``, ``ours higher`` or ``ours lower``; ``factor`` = our mean / the
    paper's; [``low``, ``high``] is the 95% interval that factor would have if the paper's number were
    an ``paper_runs``-run mean of our own seed distribution; ``p_value`` the two-sided bootstrap p.
    """

    verdict: str
    factor: float
    low: float
    high: float
    p_value: float
    note: str = ""


def paper_consistency(errors: Sequence[float], paper: float, paper_runs: int = 10) -> PaperConsistency:
    """Is ``paper`` (a mean over ``paper_runs`` runs) consistent with our seeds ``errors``?

    Under the null hypothesis both numbers are means of draws from one distribution, which our seeds
    estimate. Resampling our seeds with replacement gives B pairs (mean of n draws, mean of
    ``paper_runs`` draws); the log ratio of each pair is what log(our mean / the paper's) would be
    under the null, once widened for the small-sample bias of resampling n seeds (see the code). The
    published number is consistent when the observed log ratio lies inside that distribution's
    central 95%. This uses our seed spread for both numbers (the paper gives none), and
    with ``paper_runs`` = 1 (a single published run) it asks whether that run is a plausible seed.
    """
    values = np.asarray(errors, dtype=float)
    n = len(values)
    if not np.isfinite(paper) or paper <= 0:
        return PaperConsistency("", math.nan, math.nan, math.nan, math.nan, "no published value")
    factor = float(values.mean() / paper) if n else math.nan
    if n < MIN_SEEDS_PAPER_TEST:
        return PaperConsistency("", factor, math.nan, math.nan, math.nan,
                                f"{n} seed{'s' if n != 1 else ''}: too few to test (needs {MIN_SEEDS_PAPER_TEST})"
                                if n else "no seed")
    rng = _rng()
    ours = values[rng.integers(0, n, size=(RESAMPLES, n))].mean(axis=1)
    theirs = values[rng.integers(0, n, size=(RESAMPLES, max(int(paper_runs), 1)))].mean(axis=1)
    null = np.log10(ours) - np.log10(theirs)
    # Resampling n seeds underestimates the spread of the population they come from (the plug-in
    # variance is (n - 1)/n of the unbiased one, and the tails are those of a normal, not of a t
    # with n - 1 degrees of freedom): uncorrected, this test rejected a true null 10-13% of the time
    # at a nominal 5% (log-normal seeds, n = m = 10). Widening the null around its centre by
    # sqrt(n / (n - 1)) * t_{n-1} / z brings the size to the nominal level
    # (tests/test_statistics.py measures it by simulation).
    alpha = 1 - CONFIDENCE
    widen = math.sqrt(n / (n - 1)) * stats.t.ppf(1 - alpha / 2, n - 1) / stats.norm.ppf(1 - alpha / 2)
    centre = np.median(null)
    null = centre + widen * (null - centre)
    low, high = np.quantile(null, [alpha / 2, 1 - alpha / 2])
    observed = math.log10(factor)
    p = float(min(1.0, 2 * min((null >= observed).mean(), (null <= observed).mean())))
    p = max(p, 1 / (RESAMPLES + 1))  # a bootstrap p is never exactly 0
    verdict = "consistent" if low <= observed <= high else ("ours higher" if observed > high else "ours lower")
    return PaperConsistency(verdict, factor, float(10 ** low), float(10 ** high), p)


# -- across cells ------------------------------------------------------------------------------

def performance_profile(values: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """Dolan & More (2002) performance profiles of lower-is-better ``values`` (rows: problems or cells,
    columns: methods; NaN where a method has no result).

    For each row the performance ratio of a method is its value over the row's best; the profile of a
    method at tau is the share of rows whose ratio is at most tau (a missing value never counts).
    Returns rows ``taus``, columns the methods.
    """
    best = values.min(axis=1, skipna=True)
    ratios = values.div(best, axis=0)
    return pd.DataFrame({m: [(ratios[m] <= tau).mean() for tau in taus] for m in values.columns},
                        index=pd.Index(list(taus), name="tau"))


@dataclass(frozen=True)
class RankStability:
    """How often seeds order the methods as the paper does: ``agree`` seeds of ``seeds`` show the exact
    ordering; ``kendall_tau`` is the mean rank correlation of a seed's ordering with the paper's;
    ``kendall_w`` the concordance of the seeds' rankings (1: every seed ranks the methods alike)."""

    seeds: int
    agree: int
    kendall_tau: float
    kendall_w: float


def rank_stability(errors: pd.DataFrame, order: Sequence[str]) -> RankStability:
    """``errors``: rows seeds, columns methods (lower is better); ``order``: the methods from best to
    worst as the paper has them. Seeds lacking a method are left out."""
    frame = errors[list(order)].dropna()
    m, k = frame.shape
    if m == 0 or k < 2:
        return RankStability(m, 0, math.nan, math.nan)
    expected = np.arange(k)
    ranks = frame.rank(axis=1).to_numpy() - 1
    agree = int((ranks == expected).all(axis=1).sum())
    taus = [stats.kendalltau(r, expected).statistic for r in ranks]
    if m >= 2 and k >= 3:
        chi2 = stats.friedmanchisquare(*frame.to_numpy().T).statistic
        w = float(chi2 / (m * (k - 1)))
    else:
        w = math.nan
    return RankStability(m, agree, float(np.mean(taus)), w)
