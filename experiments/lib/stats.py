"""Statistics of repeated measurements (seeds, draws) and their formatting in claims."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value) of repeated measurements (seeds, draws)."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def diff_over_seeds(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired a - b over seeds (same seed = same init and data order) -> (mean, sample sd)."""
    return mean_spread([x - y for x, y in zip(a, b, strict=True)])


def spread(values: list[float], digits: int = 3) -> str:
    """ "mean ± sd (n=k)" of repeated measurements (seeds or draws); just the value when there is one."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f} (n={len(values)})"


def signed(mean: float, sd: float) -> str:
    """A signed difference "+m +- sd" (3 decimals); just "+m" when there is no spread (one seed)."""
    return f"{mean:+.3f} +- {sd:.3f}" if sd > 0 else f"{mean:+.3f}"
