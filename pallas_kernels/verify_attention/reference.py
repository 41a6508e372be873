"""Plain-jnp verification attention: the in-flight block (a chain or a token tree) attends to the
committed cache and to itself. Ground truth for the split-K kernel.

q [B, T, H, D]; cache k/v [B, S, H_kv, D] with `lengths` [B] committed slots (slot s is visible iff
s < lengths[b], and, when slot positions are given, slot_pos[b, s] < q_pos[b, t]); block k/v
[B, T, H_kv, D] with `block_mask` [B, T, T] (ancestor-or-self; causal for a chain). The result is
exactly `flash_attention.attention_reference` on the concatenated keys and mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.flash_attention.reference import attention_reference


def cache_visibility(
    lengths: jax.Array, s: int, t: int, slot_pos: jax.Array | None, q_pos: jax.Array | None
) -> jax.Array:
    """bool [B, T, S]: committed slots (s < length) that precede each query (when positions given)."""
    committed_bs = jnp.arange(s)[None, :] < lengths[:, None]
    vis = jnp.broadcast_to(committed_bs[:, None, :], (lengths.shape[0], t, s))
    if slot_pos is not None:
        vis &= slot_pos[:, None, :] < q_pos[:, :, None]
    return vis


def verify_reference(
    q: jax.Array,
    k_cache: jax.Array,
    v_cache: jax.Array,
    lengths: jax.Array,
    k_block: jax.Array,
    v_block: jax.Array,
    block_mask: jax.Array,
    *,
    kind: str = "softmax",
    power: float | None = None,
    slot_pos: jax.Array | None = None,
    q_pos: jax.Array | None = None,
) -> jax.Array:
    """Attention of the block over [cache ; block] -> [B, T, H, D] in q's dtype."""
    t, s = q.shape[1], k_cache.shape[1]
    mask = jnp.concatenate(
        [cache_visibility(lengths, s, t, slot_pos, q_pos), block_mask.astype(bool)], axis=2
    )
    k = jnp.concatenate([k_cache.astype(q.dtype), k_block], axis=1)
    v = jnp.concatenate([v_cache.astype(q.dtype), v_block], axis=1)
    return attention_reference(q, k, v, kind=kind, mask=mask, power=power)
