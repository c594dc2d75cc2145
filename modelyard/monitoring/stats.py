"""The statistics behind drift: distances and tests between two samples, exact or from sketches.

Every function takes :class:`~modelyard.monitoring.sketch.QuantileSketch` summaries (numbers) or
count dictionaries (categories), never raw frames, so the same code serves a one-off report on two
files and a monitor merging an hour of bucket summaries. On exact sketches (up to
``SKETCH_EXACT`` values) the results equal scipy's on the raw samples; the tests in
``tests/test_monitoring_stats.py`` check that on known distributions.

Definitions follow Evidently's (``legacy/calculations/stattests``) so thresholds carry over:
normalised Wasserstein divides by the reference's standard deviation (at least 0.001); PSI and
Jensen-Shannon bin numbers with Sturges' rule over the pooled range and categories by value; PSI
replaces empty bins by a tiny share ("feel zeroes"), Jensen-Shannon does not.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st
from scipy.spatial import distance as _distance

from modelyard.monitoring.sketch import QuantileSketch

__all__ = [
    "wasserstein", "wasserstein_normed", "ks_statistic", "ks_test", "chi_square_test", "z_test",
    "jensen_shannon", "psi", "binned_shares", "category_shares",
]


def _pooled(a: QuantileSketch, b: QuantileSketch) -> np.ndarray:
    return np.sort(np.concatenate([a.values, b.values]))


def wasserstein(a: QuantileSketch, b: QuantileSketch) -> float:
    """First Wasserstein distance: the area between the two cumulative distributions."""
    if not a.count or not b.count:
        return math.nan
    pooled = _pooled(a, b)
    deltas = np.diff(pooled)
    return float(np.sum(np.abs(a.cdf(pooled[:-1]) - b.cdf(pooled[:-1])) * deltas))


def wasserstein_normed(ref: QuantileSketch, cur: QuantileSketch, ref_std: float) -> float:
    """Wasserstein distance in units of the reference's standard deviation (Evidently's "normed")."""
    return wasserstein(ref, cur) / max(float(ref_std), 0.001)


def ks_statistic(a: QuantileSketch, b: QuantileSketch) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two CDFs."""
    if not a.count or not b.count:
        return math.nan
    pooled = _pooled(a, b)
    return float(np.max(np.abs(a.cdf(pooled) - b.cdf(pooled))))


def ks_test(a: QuantileSketch, b: QuantileSketch) -> tuple[float, float]:
    """(statistic, two-sided p-value). Exact samples use scipy's exact or asymptotic choice, as
    Evidently does; sketches of larger samples use the asymptotic Kolmogorov distribution."""
    if not a.count or not b.count:
        return math.nan, math.nan
    if a.exact and b.exact:
        res = _st.ks_2samp(a.values, b.values)
        return float(res.statistic), float(res.pvalue)
    d = ks_statistic(a, b)
    en = a.count * b.count / (a.count + b.count)
    return d, float(np.clip(_st.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _aligned(ref: dict, cur: dict) -> tuple[list, np.ndarray, np.ndarray]:
    keys = sorted(set(ref) | set(cur), key=str)
    return keys, np.array([ref.get(k, 0) for k in keys], float), np.array([cur.get(k, 0) for k in keys], float)


def chi_square_test(ref: dict, cur: dict) -> tuple[float, float]:
    """Pearson's chi-squared test of the current counts against the reference's shares.

    (statistic, p-value). A category the reference never saw has an expected count of zero, so
    the statistic is infinite and the p-value 0, as with scipy.
    """
    _, r, c = _aligned(ref, cur)
    if r.sum() == 0 or c.sum() == 0 or len(r) < 2:
        return 0.0, 1.0
    expected = r * (c.sum() / r.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (c - expected) ** 2 / np.where(expected > 0, expected, 1), np.where(c > 0, np.inf, 0))
    stat = float(terms.sum())
    return stat, float(_st.chi2.sf(stat, len(r) - 1)) if math.isfinite(stat) else 0.0


def z_test(ref: dict, cur: dict) -> tuple[float, float]:
    """Two-proportion z-test for a binary column; the proportion is that of the first key in order."""
    keys, r, c = _aligned(ref, cur)
    n1, n2 = r.sum(), c.sum()
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    if len(keys) == 1:
        return 0.0, 1.0
    # Evidently codes the first sorted key as 0 and everything else as 1, then compares means.
    p1, p2 = 1 - r[0] / n1, 1 - c[0] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    denom = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if denom == 0:
        return 0.0, 1.0
    z = (p1 - p2) / denom
    return float(z), float(2 * (1 - _st.norm.cdf(abs(z))))


def _feel_zeroes(p: np.ndarray) -> np.ndarray:
    nonzero = p[p != 0]
    if not len(nonzero):
        return p
    low = nonzero.min()
    return np.where(p == 0, low / 10**6 if low <= 0.0001 else 0.0001, p)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log, so between 0 and sqrt(ln 2))."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    if p.sum() == 0 or q.sum() == 0:
        return math.nan
    return float(_distance.jensenshannon(p, q))


def psi(p: np.ndarray, q: np.ndarray) -> float:
    """Population stability index of the current shares ``q`` against the reference ``p``."""
    p, q = _feel_zeroes(np.asarray(p, float)), _feel_zeroes(np.asarray(q, float))
    return float(np.sum((p - q) * np.log(p / q)))


def binned_shares(ref: QuantileSketch, cur: QuantileSketch, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Shares of each sample in Sturges' bins over the pooled range [low, high], as
    ``np.histogram(x, np.histogram_bin_edges(pooled, "sturges"))`` gives (last bin closed)."""
    n = ref.count + cur.count
    bins = max(int(math.ceil(math.log2(n) + 1)), 1) if n > 0 else 1
    if not high > low:
        return np.array([1.0]), np.array([1.0])
    edges = np.linspace(low, high, bins + 1)

    def shares(s: QuantileSketch) -> np.ndarray:
        below = np.searchsorted(s.values, edges, side="left").astype(float)
        below[-1] = np.searchsorted(s.values, edges[-1], side="right")
        return np.diff(below) / max(len(s.values), 1)

    return shares(ref), shares(cur)


def category_shares(ref: dict, cur: dict) -> tuple[np.ndarray, np.ndarray]:
    """Shares of each sample over the union of categories (Evidently's categorical binning)."""
    _, r, c = _aligned(ref, cur)
    return r / max(r.sum(), 1), c / max(c.sum(), 1)
