"""Threefry-2x32 lowered without a loop on CPU, so a decoding round's random draws cost one fusion.

JAX lowers the Threefry-2x32 hash (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011; JAX's default PRNG) on CPU as a rolled 5-iteration `while` loop (a compile-time choice);
elsewhere it emits the 20 rounds straight-line. Inside a decoding round every `fold_in`, `split`,
`uniform`, `gumbel` or `categorical` then becomes a nested loop of ~80 small XLA ops (copies of the
loop state each iteration), which on CPU cost more than the sampling itself. `unroll_threefry_on_cpu`
registers the straight-line form for CPU: the same hash, so every random bit (and every decoded
token) is unchanged; only how XLA executes it differs.

The hash, for key (k0, k1) and counter words (x0, x1), with k2 = k0 ^ k1 ^ 0x1BD11BDA:
    x0 += k0; x1 += k1
    for i in 0..4: 4 rounds of {x0 += x1; x1 = rotl(x1, r) ^ x0} with r from R[i % 2],
                   then x0 += k[(i + 1) % 3]; x1 += k[(i + 2) % 3] + i + 1
    R = ((13, 15, 26, 6), (17, 29, 16, 24))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
KEY_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash (20 rounds) of counters (x0, x1) under key (k0, k1), all uint32."""
    ks = (k0, k1, k0 ^ k1 ^ KEY_PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _broadcast_hash(k0, k1, x0, x1):
    shape = jnp.broadcast_shapes(k0.shape, k1.shape, x0.shape, x1.shape)
    return threefry2x32(*(jnp.broadcast_to(a, shape) for a in (k0, k1, x0, x1)))


_registered = False


def unroll_threefry_on_cpu() -> None:
    """Lowers `threefry2x32` on CPU straight-line (idempotent; affects programs lowered afterwards)."""
    global _registered
    if not _registered:
        rule = mlir.lower_fun(lambda *a: list(_broadcast_hash(*a)), multiple_results=True)
        mlir.register_lowering(threefry2x32_p, rule, platform="cpu")
        _registered = True
