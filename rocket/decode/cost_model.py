"""Modelled decoding speed from hardware-independent call counts and measured per-call costs.

On a CPU a (gamma + 1)- or N-token verify costs noticeably more than a 1-token step (little
parallel slack), so measured tokens/s understate what a method gains where a verify block is nearly
free (a memory-bound accelerator). The benchmark therefore also reports

    time / token = (target_calls * t_target(w) + draft_calls * t_draft) / emitted tokens
    speedup      = t_target(1) / (time / token)     (AR: one 1-token target call per token)

with the calls per emitted token from `decode_stats`, t_target(w) the measured cost of one target
call at the method's verify width w and t_draft the mean cost of one draft call over a round's draft
calls (`call_widths`). Work outside model calls (sampling, verification, tree bookkeeping) is not
modelled. The theoretical chain MAT (Leviathan et al. 2023, arXiv 2211.17192, eq. 1): with i.i.d.
per-position acceptance alpha, E[tokens per round] = (1 - alpha^(gamma + 1)) / (1 - alpha).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rocket.decode.engine import Method


def call_widths(method: Method) -> tuple[int, tuple[int, ...]]:
    """(target verify width, widths of one round's draft calls) for a method of the engine.

    A draft-model method must be a draft tree (Speculative, DySpec: `widths`, the node count of each
    tree level, besides the `Method` fields); it first feeds the draft its 2-token pending block, then one tree-masked call on levels 1..d for d < depth; every other
    method calls only the target, once per round on `block_width` tokens.
    """
    if not method.needs_draft:
        return method.block_width, ()
    if not hasattr(method, "widths"):
        raise TypeError(
            f"the cost model knows draft-tree methods (with `widths`), got {type(method).__name__}"
        )
    return method.block_width, (2,) + tuple(int(w) for w in np.cumsum(method.widths)[:-1])


def chain_mat(alpha: float, gamma: int) -> float:
    """Expected tokens per round of a gamma-draft chain with i.i.d. per-position acceptance alpha:
    sum_{i=0..gamma} alpha^i = (1 - alpha^(gamma + 1)) / (1 - alpha) (gamma + 1 at alpha = 1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"acceptance rate alpha must lie in [0, 1], got {alpha}")
    if gamma < 0:
        raise ValueError(f"draft length gamma must be >= 0, got {gamma}")
    return float(sum(alpha**i for i in range(gamma + 1)))


def modelled_time_per_token(
    target_calls_per_token: float, draft_calls_per_token: float, t_target: float, t_draft: float = 0.0
) -> float:
    """Seconds per emitted token: calls per token (from `decode_stats`) times seconds per call."""
    for name, value in (("t_target", t_target), ("t_draft", t_draft)):
        if not value >= 0.0:
            raise ValueError(f"{name} must be a non-negative time in seconds, got {value}")
    if draft_calls_per_token > 0 and t_draft == 0.0:
        raise ValueError("the method calls a draft model but t_draft is 0")
    return target_calls_per_token * t_target + draft_calls_per_token * t_draft


def modelled_speedup(
    stats: Mapping[str, float], t_target_1: float, t_target: float, t_draft: float = 0.0
) -> float:
    """Speedup over autoregressive decoding, t_target(1) / modelled time per token.

    stats: `decode_stats` output (its target / draft calls per token); t_target_1: one 1-token target
    call; t_target: one target call at the method's verify width; t_draft: the mean draft call.
    """
    if not t_target_1 > 0.0:
        raise ValueError(f"t_target_1 must be a positive time in seconds, got {t_target_1}")
    per_token = modelled_time_per_token(
        stats["target_calls_per_token"], stats["draft_calls_per_token"], t_target, t_draft
    )
    return t_target_1 / per_token
