"""Rotary position embeddings (RoPE; Su et al., 2021, arXiv 2104.09864).

Pairs of channels (i, i + D_h/2) are rotated by the angle pos * theta^(-2i/D_h) (the "half-split"
layout used by GPT-NeoX / Llama). Positions are explicit per token, so tokens that travel (MoD/MoR
gathers, tree nodes, re-based streaming caches) keep their own positions.

Llama-3 scaling (`scaling=(factor, low_freq_factor, high_freq_factor, original_max_len)`; Meta's
Llama 3.1 release, as in Hugging Face `transformers`): with wavelength lambda_i = 2 pi / f_i,
f_i -> f_i / factor where lambda_i > original_max_len / low_freq_factor, f_i kept where
lambda_i < original_max_len / high_freq_factor, and in between
f_i -> (1 - s) f_i / factor + s f_i with s = (original_max_len / lambda_i - low) / (high - low).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

RopeScaling = tuple[float, float, float, int]  # (factor, low_freq_factor, high_freq_factor, original_max_len)


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> jax.Array:
    """Inverse frequencies theta^(-2i/D_h), i < D_h/2, float32 [D_h/2] (Llama-3 scaled if given)."""
    freqs = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    if scaling is None:
        return freqs
    factor, low, high, original = scaling
    wavelen = 2 * jnp.pi / freqs
    scaled = jnp.where(wavelen > original / low, freqs / factor, freqs)
    smooth = (original / wavelen - low) / (high - low)
    medium = (wavelen >= original / high) & (wavelen <= original / low)
    return jnp.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


def apply_rope(
    x_bthd: jax.Array, positions_bt: jax.Array, theta: float, scaling: RopeScaling | None = None
) -> jax.Array:
    """Rotates queries or keys x[B, T, H, D_h] by their positions[B, T]; computed in float32."""
    head_dim = x_bthd.shape[-1]
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    angles_btf = positions_bt.astype(jnp.float32)[..., None] * rope_frequencies(head_dim, theta, scaling)
    sin = jnp.sin(angles_btf)[:, :, None, :]  # [B, T, 1, D_h/2]
    cos = jnp.cos(angles_btf)[:, :, None, :]
    x1, x2 = jnp.split(x_bthd.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_bthd.dtype)
