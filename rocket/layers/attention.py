"""Grouped-query causal self-attention with RoPE and an optional KV cache.

`attention_fn` is the single entry point every attention variant goes through:

  softmax(q k^T / sqrt(D_h) + mask) v,   q[B, T, H, D_h], k/v[B, S, H_kv, D_h], mask bool[B, T, S]

with H = G * H_kv (query heads grouped over shared K/V heads; Ainslie et al., 2023, arXiv
2305.13245). Scores and softmax are float32. `impl="xla"` is the plain-jnp reference; faster
implementations (Pallas kernels) plug in behind the same signature and must match it.

The `Attention` module attends the in-flight block to itself (through `block_mask`, causal and
segment-aware by default) and to the committed cache slots it may see (`LayerCache.visible`).
It never mutates the cache: it returns the block's own K/V for the caller to commit.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.decode.cache import LayerCache
from rocket.layers.init import kernel_init
from rocket.layers.rope import apply_rope

_NEG_INF = -1e30  # finite, so a row with nothing visible gives a uniform average, never NaN


def attention_fn(
    q_bthd: jax.Array, k_bskd: jax.Array, v_bskd: jax.Array, mask_bts: jax.Array, *, impl: str = "xla"
) -> jax.Array:
    """Masked grouped-query attention -> [B, T, H, D_h] in q's dtype. See module docstring."""
    if impl not in ("xla", "auto"):
        raise ValueError(f"unknown attention impl {impl!r}; available: 'xla', 'auto'")
    b, t, h, d = q_bthd.shape
    kv_heads = k_bskd.shape[2]
    if h % kv_heads:
        raise ValueError(f"{h} query heads are not divisible by {kv_heads} key/value heads")
    q_btkgd = q_bthd.reshape(b, t, kv_heads, h // kv_heads, d)
    scores_bkgts = jnp.einsum("btkgd,bskd->bkgts", q_btkgd, k_bskd, preferred_element_type=jnp.float32) * (
        d**-0.5
    )
    scores_bkgts = jnp.where(mask_bts[:, None, None], scores_bkgts, _NEG_INF)
    probs_bkgts = jax.nn.softmax(scores_bkgts, axis=-1)
    out_btkgd = jnp.einsum("bkgts,bskd->btkgd", probs_bkgts.astype(v_bskd.dtype), v_bskd)
    return out_btkgd.reshape(b, t, h, d)


def make_block_mask(
    segment_ids_bt: jax.Array | None, block_mask_btt: jax.Array | None, t: int, batch: int
) -> jax.Array:
    """bool[B, T, T] mask among the block's own tokens: causal AND same segment AND user mask.

    Segment ids (from packing) keep documents packed into one row from seeing each other; a user
    `block_mask` (e.g. a tree's ancestor-or-self mask) is intersected with the causal mask.
    """
    causal_tt = jnp.tril(jnp.ones((t, t), bool))
    mask = jnp.broadcast_to(causal_tt, (batch, t, t))
    if segment_ids_bt is not None:
        mask = mask & (segment_ids_bt[:, :, None] == segment_ids_bt[:, None, :])
    if block_mask_btt is not None:
        mask = mask & block_mask_btt.astype(bool)
    return mask


class Attention(nn.Module):
    """Multi-head attention with GQA and RoPE: x[B, T, D] -> (y[B, T, D], (k, v) of the block)."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float
    n_layers: int = 1
    impl: str = "xla"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_btd: jax.Array,
        positions_bt: jax.Array,
        block_mask_btt: jax.Array,
        cache: LayerCache | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        d = x_btd.shape[-1]
        h, kv, dh = self.n_heads, self.n_kv_heads, self.head_dim
        wq = self.param("wq", kernel_init(("embed", "heads", "head_dim")), (d, h, dh), self.param_dtype)
        wk = self.param("wk", kernel_init(("embed", "kv_heads", "head_dim")), (d, kv, dh), self.param_dtype)
        wv = self.param("wv", kernel_init(("embed", "kv_heads", "head_dim")), (d, kv, dh), self.param_dtype)
        wo = self.param(
            "wo",
            kernel_init(("heads", "head_dim", "embed"), in_axes=2, depth=self.n_layers),
            (h, dh, d),
            self.param_dtype,
        )
        x = x_btd.astype(self.dtype)
        q_bthd = jnp.einsum("btd,dhk->bthk", x, wq.astype(self.dtype))
        k_bthd = jnp.einsum("btd,dhk->bthk", x, wk.astype(self.dtype))
        v_bthd = jnp.einsum("btd,dhk->bthk", x, wv.astype(self.dtype))
        q_bthd = apply_rope(q_bthd, positions_bt, self.rope_theta)
        k_raw_bthd = k_bthd  # returned instead of the rotated keys for caches that rotate at read time
        k_bthd = apply_rope(k_bthd, positions_bt, self.rope_theta)
        q_bthd = nn.with_logical_constraint(
            q_bthd, ("activation_batch", "activation_length", "activation_heads", "activation_kv")
        )

        if cache is None:
            keys, values, mask = k_bthd, v_bthd, block_mask_btt
        else:  # committed slots first, then the in-flight block
            cache_k = cache.k.astype(self.dtype)
            if cache.rope_at_read:  # streaming: slot_pos are cache-relative positions
                cache_k = apply_rope(cache_k, cache.slot_pos, self.rope_theta)
            keys = jnp.concatenate([cache_k, k_bthd], axis=1)
            values = jnp.concatenate([cache.v.astype(self.dtype), v_bthd], axis=1)
            mask = jnp.concatenate([cache.visible(positions_bt), block_mask_btt], axis=2)
        out_bthd = attention_fn(q_bthd, keys, values, mask, impl=self.impl)
        y_btd = jnp.einsum("bthk,hkd->btd", out_bthd, wo.astype(self.dtype))
        if cache is not None and cache.rope_at_read:
            k_bthd = k_raw_bthd
        return y_btd, (k_bthd, v_bthd)
