"""Samplers shared by every decoder: temperature, top-k and top-p (nucleus) warping.

`warp` turns logits[..., V] into a float32 distribution; greedy decoding is a static flag
(`SamplerConfig.greedy`), never a temperature going to zero.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """temperature > 0; top_k = 0 disables top-k; top_p = 1.0 disables nucleus filtering."""

    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.greedy and self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 for sampling (use greedy=True), got {self.temperature}"
            )
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def warp(logits_v: jax.Array, cfg: SamplerConfig) -> jax.Array:
    """logits[..., V] -> probs[..., V] after temperature, top-k, then top-p (float32).

    Top-p keeps the smallest set of most likely tokens whose mass reaches p (the token that crosses
    p is kept), so the distribution is never empty.
    """
    logits = logits_v.astype(jnp.float32) / cfg.temperature
    if cfg.top_k:
        kth = jax.lax.top_k(logits, min(cfg.top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    probs = jax.nn.softmax(logits, axis=-1)
    if cfg.top_p < 1.0:
        sorted_p = jnp.sort(probs, axis=-1)[..., ::-1]
        mass_before = jnp.cumsum(sorted_p, axis=-1) - sorted_p  # mass of strictly more likely tokens
        kept = jnp.where(mass_before < cfg.top_p, sorted_p, jnp.inf)
        threshold = jnp.min(kept, axis=-1, keepdims=True)
        probs = jnp.where(probs >= threshold, probs, 0.0)
        probs = probs / jnp.sum(probs, axis=-1, keepdims=True)
    return probs


def sample(key: jax.Array, logits_v: jax.Array, cfg: SamplerConfig) -> jax.Array:
    """Draws token ids [...] from warp(logits); argmax when `cfg.greedy`."""
    if cfg.greedy:
        return jnp.argmax(logits_v, axis=-1).astype(jnp.int32)
    probs = warp(logits_v, cfg)
    return jax.random.categorical(key, jnp.log(probs), axis=-1).astype(jnp.int32)
