"""Goodness-of-fit helpers for the statistical tests (with the power checks they must come with)."""

from __future__ import annotations

import numpy as np
import scipy.stats


def _merge_small_cells(probs: np.ndarray, n: int, min_expected: float) -> np.ndarray:
    """Cell index map: cells with expected count < min_expected are pooled into one extra cell."""
    small = probs * n < min_expected
    return np.where(small, int((~small).sum()), np.cumsum(~small) - 1)


def chi2_gof(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> tuple[float, float, int]:
    """Pearson chi^2 of observed counts against probabilities -> (statistic, p-value, df).

    Observations in a cell of probability 0 give p-value 0 (the law can never produce them).
    """
    counts = np.asarray(counts, np.float64).ravel()
    probs = np.asarray(probs, np.float64).ravel()
    if np.any(counts[probs <= 0] > 0):
        return np.inf, 0.0, 0
    n = counts.sum()
    cell = _merge_small_cells(probs, n, min_expected)
    obs = np.bincount(cell, counts)
    exp = np.bincount(cell, probs) * n
    keep = exp > 0
    stat = float(np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep]))
    df = int(keep.sum()) - 1
    return stat, float(scipy.stats.chi2.sf(stat, df)), df


def noncentrality(probs: np.ndarray, probs_bad: np.ndarray, n: int, min_expected: float = 5.0) -> float:
    """lambda = n * sum (pi_bad - pi)^2 / pi over the same merged cells: the chi^2 test's expected
    excess when the data come from `probs_bad`; power ~ 1 when lambda >> the critical value."""
    probs = np.asarray(probs, np.float64).ravel()
    cell = _merge_small_cells(probs, n, min_expected)
    p = np.bincount(cell, probs)
    q = np.bincount(cell, np.asarray(probs_bad, np.float64).ravel())
    keep = p > 0
    return float(n * np.sum((q[keep] - p[keep]) ** 2 / p[keep]))


def critical_value(df: int, alpha: float) -> float:
    return float(scipy.stats.chi2.isf(alpha, df))
