"""Token embeddings: a learned table used for lookup and, when tied, for the output logits."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.layers.init import embed_init


class Embed(nn.Module):
    """tokens[B, T] -> x[B, T, D]; `attend(h[B, T, D]) -> logits[B, T, V]` (float32) with the same table.

    `scale` multiplies the looked-up vectors (Gemma: sqrt(D)), not the readout."""

    vocab_size: int
    d_model: int
    init_std: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    scale: float = 1.0

    def setup(self):
        self.table_vd = self.param(
            "embedding",
            embed_init(("vocab", "embed"), self.init_std),
            (self.vocab_size, self.d_model),
            self.param_dtype,
        )

    def __call__(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array | None = None) -> jax.Array:
        del segment_ids_bt  # one table for every sequence (the per-sequence protocol of LexinvariantEmbed)
        x_btd = jnp.take(self.table_vd, tokens_bt, axis=0).astype(self.dtype)
        return x_btd if self.scale == 1.0 else x_btd * jnp.asarray(self.scale, self.dtype)

    def attend(self, h_btd: jax.Array, segment_ids_bt: jax.Array | None = None) -> jax.Array:
        del segment_ids_bt
        return jnp.einsum(
            "btd,vd->btv",
            h_btd.astype(self.dtype),
            self.table_vd.astype(self.dtype),
            preferred_element_type=jnp.float32,
        )
