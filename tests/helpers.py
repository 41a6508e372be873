"""Tiny shared fixtures for the tests (models stay at d <= 128, 2 layers, seq <= 128)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rocket.config import ModelConfig
from rocket.models import Transformer

TINY = dict(vocab_size=258, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128)


def tiny_model(**overrides) -> tuple[Transformer, dict]:
    cfg = ModelConfig(**{**TINY, **overrides})
    model = Transformer(cfg)
    tokens = jnp.zeros((1, 8), jnp.int32)
    params = model.init(jax.random.key(0), tokens, jnp.zeros_like(tokens))
    return model, params


def positions_for(tokens: jax.Array) -> jax.Array:
    b, t = tokens.shape
    return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
