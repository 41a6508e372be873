"""Rotary position embeddings (RoPE; Su et al., 2021, arXiv 2104.09864).

Pairs of channels (i, i + D_h/2) are rotated by the angle pos * theta^(-2i/D_h) (the "half-split"
layout used by GPT-NeoX / Llama). Positions are explicit per token, so tokens that travel (MoD/MoR
gathers, tree nodes, re-based streaming caches) keep their own positions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_frequencies(head_dim: int, theta: float) -> jax.Array:
    """Inverse frequencies theta^(-2i/D_h), i < D_h/2, float32 [D_h/2]."""
    return theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)


def apply_rope(x_bthd: jax.Array, positions_bt: jax.Array, theta: float) -> jax.Array:
    """Rotates queries or keys x[B, T, H, D_h] by their positions[B, T]; computed in float32."""
    head_dim = x_bthd.shape[-1]
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    angles_btf = positions_bt.astype(jnp.float32)[..., None] * rope_frequencies(head_dim, theta)
    sin = jnp.sin(angles_btf)[:, :, None, :]  # [B, T, 1, D_h/2]
    cos = jnp.cos(angles_btf)[:, :, None, :]
    x1, x2 = jnp.split(x_bthd.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_bthd.dtype)
