"""Verdict rules of the repro scripts: two-sided against the paper's effect size.

A claim is scored from our effect `gain` in the paper's direction (positive = what the paper
claims, e.g. baseline loss minus method loss), its seed spread `spread` (sample sd of the paired
per-seed differences; 0 for one seed) and, where the paper reports one in comparable units, the
paper's own effect `paper` (same sign convention). The rules are two-sided:

  gain - spread > FACTOR * paper      "implausible - see controls": in the claimed direction but
                                      more than FACTOR times the paper's effect beyond the seed
                                      spread. A tiny model beating a baseline by far more than the
                                      paper did at scale usually measures a confound (an extra
                                      LayerScale, an undertrained baseline); the claim's control
                                      column names the control that decides.
  otherwise                           the one-sided rule of the claim (`at_most`, `beats`).

A modelled number never upgrades a measured one: `speed` decides from the measured speedup only.
"""

from __future__ import annotations

REPRODUCED, PARTLY, NOT, INCONCLUSIVE = "reproduced", "partly", "not reproduced", "inconclusive"
IMPLAUSIBLE = "implausible - see controls"
VERDICTS = (REPRODUCED, PARTLY, NOT, INCONCLUSIVE, IMPLAUSIBLE)
FACTOR = 3.0  # an effect more than this many times the paper's (beyond the seed spread) is implausible


def implausible(gain: float, spread: float, paper: float | None, factor: float = FACTOR) -> bool:
    """Whether `gain` (in the claimed direction) exceeds `factor` x the paper's effect `paper`
    beyond the seed spread. A paper effect of None (no number in comparable units) or <= 0 (the
    paper claims a tie) bounds nothing (a tie claim is bounded by `at_most`'s own tolerance)."""
    return paper is not None and paper > 0 and gain - spread > factor * paper


def at_most(diff: float, spread: float, tol: float, *, paper: float | None = None) -> str:
    """Claim "diff <= 0" ("matches or beats": method minus baseline, lower is better; `paper` the
    paper's improvement -diff, positive). Implausible first (see `implausible`, gain = -diff); then
    within the tolerance `tol` (at least the seed spread) reproduced, within 3x partly, else not."""
    if implausible(-diff, spread, paper):
        return IMPLAUSIBLE
    tol = max(tol, spread)
    if diff <= tol:
        return REPRODUCED
    return PARTLY if diff <= 3 * tol else NOT


def beats(gain: float, spread: float, noise: float, *, paper: float | None = None) -> str:
    """Claim "gain > 0" (strictly better). Implausible first; then a gain beyond the noise floor
    max(`noise`, 2 x spread) reproduced, a loss beyond it not reproduced, else inconclusive."""
    if implausible(gain, spread, paper):
        return IMPLAUSIBLE
    floor = max(noise, 2 * spread)
    if gain > floor:
        return REPRODUCED
    return NOT if gain < -floor else INCONCLUSIVE


def faster(time_ratio: float, flop_ratio: float, noise: float = 0.2) -> str:
    """Claim "faster than the baseline" from a measured time ratio (model / baseline): timings on
    the shared CPU move by about +-`noise`, so only ratios beyond it decide. A time ratio far below
    the FLOP ratio (model / baseline) is faster than the arithmetic allows: load noise in the
    timing, hence inconclusive."""
    if time_ratio < flop_ratio * (1 - noise):
        return INCONCLUSIVE
    if time_ratio < 1 - noise:
        return REPRODUCED
    return NOT if time_ratio > 1 + noise else INCONCLUSIVE


def speed(measured: float, paper_low: float, *, paper_high: float | None = None) -> str:
    """A speedup claim ("x paper_low or more") from the *measured* speedup over the baseline only
    (a modelled speedup is reported beside it, never decides): reproduced at paper_low or above
    (implausible above FACTOR x paper_high, the top of the paper's range), partly for a real gain
    (> 1.05x) short of it, not reproduced otherwise (no gain, or a slowdown)."""
    if measured > FACTOR * (paper_high or paper_low):
        return IMPLAUSIBLE
    if measured >= paper_low:
        return REPRODUCED
    return PARTLY if measured > 1.05 else NOT
