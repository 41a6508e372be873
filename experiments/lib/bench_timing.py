"""Side-by-side timing on a shared machine: every candidate is called in turn, round after round,
so background load hits all of them alike; each keeps its best (minimum) wall time.

  interleaved({"a": f, "b": g}, rounds=5) -> {"a": best seconds of f(), "b": best seconds of g()}

A callable returns whatever it computed; the timer blocks on it (`jax.block_until_ready`) before
stopping the clock. Stateful steps (a train step that consumes its state) keep their state in a
closure. `warmup` untimed rounds run first (compilation, caches).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call of `fn`, including the device work of what it returns."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Best wall seconds per call of each callable, called round-robin `rounds` times after
    `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn)
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn))
    return best
