"""Bootstrap confidence intervals, always from an explicit seeded ``numpy.random.Generator``.

The paper reports single runs without intervals; we attach a 95% percentile-bootstrap
interval to every number the report shows. Every helper takes ``rng`` (a Generator made by
:func:`make_rng`) so that the same store and seed give the same report; no global RNG is used.

Percentile bootstrap with few replicates is narrow (two seeds give at most the interval between
them), so the claim checks treat fewer than ``MIN_RUNS`` runs in a group as too little data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats as _sstats

from sparsetopo.seeding import rng as _seeded

N_BOOT = 2000      # bootstrap resamples; 2000 keeps the 2.5/97.5 percentiles stable to ~0.1 point
LEVEL = 0.95       # two-sided interval
MIN_RUNS = 2       # fewer runs than this in a compared group: no interval, verdict "inconclusive"


def make_rng(seed: int, *labels) -> np.random.Generator:
    """The Generator every report statistic draws from: ``seed`` plus labels naming its use."""
    return _seeded(seed, "report", *labels)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval (``nan`` bounds when there was too little data)."""

    value: float
    low: float
    high: float
    n: int

    @property
    def has_interval(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def to_dict(self) -> dict:
        return {"value": _clean(self.value), "ci_low": _clean(self.low), "ci_high": _clean(self.high), "n": self.n}


def _clean(x):
    return None if x is None or not np.isfinite(x) else float(x)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)


def mean_ci(values, rng: np.random.Generator, n_boot: int = N_BOOT, level: float = LEVEL) -> Estimate:
    """Mean of ``values`` with a percentile-bootstrap interval (no interval below 2 values)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if x.size < 2:
        return Estimate(float(x.mean()), float("nan"), float("nan"), int(x.size))
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    low, high = _percentiles(means, level)
    return Estimate(float(x.mean()), low, high, int(x.size))


def diff_ci(a, b, rng: np.random.Generator, n_boot: int = N_BOOT, level: float = LEVEL,
            min_runs: int = MIN_RUNS) -> Estimate:
    """mean(a) - mean(b) for two independent groups, each resampled with replacement.

    No interval when either group has fewer than ``min_runs`` values. ``n`` is the smaller group.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), int(min(a.size, b.size)))
    value = float(a.mean() - b.mean())
    if min(a.size, b.size) < min_runs:
        return Estimate(value, float("nan"), float("nan"), int(min(a.size, b.size)))
    da = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    db = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(axis=1)
    low, high = _percentiles(da - db, level)
    return Estimate(value, low, high, int(min(a.size, b.size)))


def ratio_ci(a, b, rng: np.random.Generator, n_boot: int = N_BOOT, level: float = LEVEL,
             min_runs: int = MIN_RUNS) -> Estimate:
    """mean(a) / mean(b) for two independent groups of positive values, bootstrap interval."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0 or b.mean() <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"), int(min(a.size, b.size)))
    value = float(a.mean() / b.mean())
    if min(a.size, b.size) < min_runs:
        return Estimate(value, float("nan"), float("nan"), int(min(a.size, b.size)))
    ma = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    mb = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(axis=1)
    low, high = _percentiles(ma / mb, level)
    return Estimate(value, low, high, int(min(a.size, b.size)))


def spearman(x, y) -> float:
    """Spearman's rho, ``nan`` when either variable is constant or fewer than 3 pairs."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(_sstats.spearmanr(x, y).statistic)


def verdict_above(estimate: Estimate, threshold: float) -> str:
    """"supported" when the whole interval lies above ``threshold``, "not supported" when it
    lies wholly below, "inconclusive" when it straddles it or there is no interval."""
    if not estimate.has_interval:
        return "inconclusive"
    if estimate.low > threshold:
        return "supported"
    if estimate.high < threshold:
        return "not supported"
    return "inconclusive"


def verdict_below(estimate: Estimate, threshold: float) -> str:
    """The mirror of :func:`verdict_above`: supported when the interval lies wholly below."""
    if not estimate.has_interval:
        return "inconclusive"
    if estimate.high < threshold:
        return "supported"
    if estimate.low > threshold:
        return "not supported"
    return "inconclusive"


def combine_all(verdicts: list[str]) -> str:
    """A conjunction: supported only if every part is, not supported if any part is not."""
    if not verdicts:
        return "inconclusive"
    if any(v == "not supported" for v in verdicts):
        return "not supported"
    if all(v == "supported" for v in verdicts):
        return "supported"
    return "inconclusive"


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (what Spearman's rho uses); numpy only."""
    a = np.asarray(a, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    bounds = np.r_[starts, a.size]
    average = (bounds[:-1] + bounds[1:] + 1) / 2.0  # mean of the 1-based positions start+1..end
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    ranks = np.empty(a.size)
    ranks[order] = average[group]
    return ranks


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho computed as the Pearson correlation of average ranks (fast, for bootstraps)."""
    if x.size < 3:
        return float("nan")
    rx, ry = average_ranks(x), average_ranks(y)
    sx, sy = rx.std(), ry.std()
    if sx == 0 or sy == 0:
        return float("nan")
    return float(((rx - rx.mean()) * (ry - ry.mean())).mean() / (sx * sy))


def block_bootstrap(blocks: list[list[np.ndarray]], block_stat: Callable[[np.ndarray], np.ndarray],
                    rng: np.random.Generator, n_boot: int = N_BOOT, level: float = LEVEL) -> Estimate:
    """Mean over blocks of ``block_stat(group means)``, with a two-level bootstrap interval.

    ``blocks`` : one entry per block (e.g. a degree cell), each a list of value arrays (e.g. the
    seeds of each construction in that cell). ``block_stat`` maps an array of group means of shape
    ``(n_groups, B)`` to shape ``(B,)`` (e.g. max - min over constructions). Seeds are resampled
    within each group and blocks are resampled with replacement, so the interval reflects both
    seed noise and the spread between cells. No interval with fewer than 2 blocks.
    """
    blocks = [[np.asarray(g, dtype=float) for g in b] for b in blocks if b]
    if not blocks:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    point = np.array([float(block_stat(np.array([[g.mean()] for g in b]))[0]) for b in blocks])
    value = float(point.mean())
    if len(blocks) < 2:
        return Estimate(value, float("nan"), float("nan"), len(blocks))
    per_block = np.empty((len(blocks), n_boot))
    for j, b in enumerate(blocks):
        means = np.array([g[rng.integers(0, g.size, size=(n_boot, g.size))].mean(axis=1) for g in b])
        per_block[j] = block_stat(means)
    pick = rng.integers(0, len(blocks), size=(n_boot, len(blocks)))
    samples = per_block[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    low, high = _percentiles(samples, level)
    return Estimate(value, low, high, len(blocks))


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair of two (B, n) arrays (NaN where a row is constant)."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of two (B, n) arrays: Pearson's r of the rows' ranks."""
    return _row_pearson(_sstats.rankdata(x, axis=1), _sstats.rankdata(y, axis=1))


_ROW_CORRELATIONS = {"spearman": _row_spearman, "pearson": _row_pearson}


def correlation_ci(x, y, rng: np.random.Generator, method: str = "spearman", n_boot: int = N_BOOT,
                   level: float = LEVEL, minus: tuple | None = None) -> Estimate:
    """Spearman's rho or Pearson's r of (x, y) with a bootstrap interval, pairs resampled jointly.

    ``minus=(x2, y2)``: the interval of corr(x, y) - corr(x2, y2) over the same resampled runs
    (all four arrays describe the same runs). No interval below 4 runs.
    """
    row = _ROW_CORRELATIONS[method]
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = x.size

    def point(a, b):
        return float(row(np.asarray(a, dtype=float)[None], np.asarray(b, dtype=float)[None])[0]) if a.size >= 3 else float("nan")

    value = point(x, y) - (point(*map(np.asarray, minus)) if minus else 0.0)
    if n < 4:
        return Estimate(value, float("nan"), float("nan"), n)
    idx = rng.integers(0, n, size=(n_boot, n))
    samples = row(x[idx], y[idx])
    if minus:
        x2, y2 = (np.asarray(a, dtype=float) for a in minus)
        samples = samples - row(x2[idx], y2[idx])
    low, high = _percentiles(samples, level)
    return Estimate(value, low, high, n)


def spearman_ci(x, y, rng: np.random.Generator, n_boot: int = N_BOOT, level: float = LEVEL,
                minus: tuple | None = None) -> Estimate:
    """Spearman's rho of (x, y) with a bootstrap interval (see :func:`correlation_ci`)."""
    return correlation_ci(x, y, rng, "spearman", n_boot, level, minus)


def grouped_spearman_ci(groups: list[np.ndarray], x, y, rng: np.random.Generator, n_boot: int = N_BOOT,
                        level: float = LEVEL) -> Estimate:
    """Mean of within-group Spearman rhos of (x, y), weighted by group size, with an interval
    from resampling runs within each group (``groups`` are index arrays into ``x`` and ``y``)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    groups = [np.asarray(g) for g in groups if len(g) >= 3]
    if not groups:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    n = int(sum(g.size for g in groups))
    point = np.array([rank_correlation(x[g], y[g]) for g in groups])
    weights = np.array([g.size for g in groups], dtype=float)
    ok = np.isfinite(point)
    value = float(np.average(point[ok], weights=weights[ok])) if ok.any() else float("nan")
    rhos = np.empty((len(groups), n_boot))
    for j, g in enumerate(groups):
        idx = g[rng.integers(0, g.size, size=(n_boot, g.size))]
        rhos[j] = _row_spearman(x[idx], y[idx])
    w = np.where(np.isfinite(rhos), weights[:, None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = np.nansum(np.nan_to_num(rhos) * w, axis=0) / w.sum(axis=0)
    low, high = _percentiles(samples, level)
    return Estimate(value, low, high, n)
