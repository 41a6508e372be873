"""RMSNorm (Zhang & Sennrich, 2019): y = x / sqrt(mean(x^2) + eps) * scale, statistics in float32.

With `offset` (Gemma) the scale is (1 + w), w initialised to zero."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last axis, with a learned per-channel scale.

    The mean of squares is computed in float32 whatever the compute dtype; the output is cast back
    to `dtype`. The scale is initialised to one (to zero with `offset`, which multiplies by 1 + w)
    and carries the logical axis name "norm".
    """

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    offset: bool = False

    @nn.compact
    def __call__(self, x_d: jax.Array) -> jax.Array:  # [..., d] -> [..., d]
        scale_d = self.param(
            "scale",
            nn.with_logical_partitioning(
                nn.initializers.zeros if self.offset else nn.initializers.ones, ("norm",)
            ),
            (x_d.shape[-1],),
            self.param_dtype,
        )
        x32 = x_d.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * (scale_d.astype(jnp.float32) + (1.0 if self.offset else 0.0))).astype(self.dtype)
