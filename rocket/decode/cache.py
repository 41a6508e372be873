"""The one KV cache every rocket decoder shares (see shared/research/decoding.md section 1.2).

Layout (L layers, B rows, S_max slots, H_kv heads, D_h head width):

  Cache.k, Cache.v : [L, B, S_max, H_kv, D_h]   keys (after RoPE) and values
  Cache.slot_pos   : [L, B, S_max] int32        logical position of each slot, -1 = empty
  Cache.length     : [L, B] int32               committed slots per layer and row

Lengths and positions are per layer because adaptive-depth models (MoD, MoR) let a layer skip a
token: that layer then writes nothing, so layers hold different numbers of slots. Attention masks
are always built from `slot_pos`, never from slot indices.

Invariant: the cache holds only committed, linear history. A model step *reads* the cache and
returns the in-flight block's K/V (`KVBlock`); the caller decides what to keep with
`commit_block`. Rollback (`rollback`) keeps the slots whose logical position is below a cut, O(1)
in data movement: later slots become invisible and are overwritten by the next commit.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class KVBlock:
    """K/V of an in-flight block of T tokens, for every layer."""

    k: jax.Array  # [L, B, T, H_kv, D_h]
    v: jax.Array  # [L, B, T, H_kv, D_h]
    positions: jax.Array  # [B, T] int32 logical positions of the block's tokens


@flax.struct.dataclass
class LayerCache:
    """One layer's view of the cache, as the attention layer reads it."""

    k: jax.Array  # [B, S_max, H_kv, D_h]
    v: jax.Array  # [B, S_max, H_kv, D_h]
    slot_pos: jax.Array  # [B, S_max]
    length: jax.Array  # [B]

    def visible(self, q_pos_bt: jax.Array) -> jax.Array:
        """bool[B, T, S_max]: slot s is committed and precedes the query's logical position."""
        s_max = self.k.shape[1]
        committed_bs = jnp.arange(s_max)[None, :] < self.length[:, None]
        before_bts = self.slot_pos[:, None, :] < q_pos_bt[:, :, None]
        return committed_bs[:, None, :] & before_bts


@flax.struct.dataclass
class Cache:
    k: jax.Array  # [L, B, S_max, H_kv, D_h]
    v: jax.Array  # [L, B, S_max, H_kv, D_h]
    slot_pos: jax.Array  # [L, B, S_max] int32, -1 = empty
    length: jax.Array  # [L, B] int32

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self.k[i], self.v[i], self.slot_pos[i], self.length[i])

    def layers(self) -> LayerCache:
        """All layers stacked on a leading axis (what `nn.scan` over layers consumes)."""
        return LayerCache(self.k, self.v, self.slot_pos, self.length)


def init_cache(
    n_layers: int, batch: int, max_len: int, n_kv_heads: int, head_dim: int, dtype: jnp.dtype = jnp.float32
) -> Cache:
    """An empty cache with `max_len` slots per row and layer."""
    shape = (n_layers, batch, max_len, n_kv_heads, head_dim)
    return Cache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        slot_pos=jnp.full((n_layers, batch, max_len), -1, jnp.int32),
        length=jnp.zeros((n_layers, batch), jnp.int32),
    )


def _write_rows(buf_bs: jax.Array, block_bt: jax.Array, start_b: jax.Array) -> jax.Array:
    """Per-row dynamic_update_slice of block[b] into buf[b] at slot start[b] (axis 1)."""

    def one(buf, block, start):
        idx = (start,) + (0,) * (buf.ndim - 1)
        return jax.lax.dynamic_update_slice(buf, block.astype(buf.dtype), idx)

    return jax.vmap(one)(buf_bs, block_bt, start_b)


def commit_block(cache: Cache, block: KVBlock, n: jax.Array | int) -> Cache:
    """Keeps the first n[b] tokens of the in-flight block in row b of every layer.

    All T entries are written at slots [length, length + T) and `length` advances by n; entries past
    n stay invisible (slot >= length) and are overwritten by the next commit. The caller must ensure
    length + T <= S_max (`check_capacity`): `dynamic_update_slice` would otherwise clamp the start and
    overwrite committed history.
    """
    n_b = jnp.broadcast_to(jnp.asarray(n, jnp.int32), cache.length.shape[1:])
    write = jax.vmap(_write_rows)  # over layers
    start_lb = cache.length
    pos_lbt = jnp.broadcast_to(block.positions[None], (cache.k.shape[0],) + block.positions.shape)
    return Cache(
        k=write(cache.k, block.k, start_lb),
        v=write(cache.v, block.v, start_lb),
        slot_pos=write(cache.slot_pos, pos_lbt.astype(jnp.int32), start_lb),
        length=cache.length + n_b[None, :],
    )


def rollback(cache: Cache, position: jax.Array | int) -> Cache:
    """Forgets every slot whose logical position is >= position[b] (per row, in every layer).

    Slots are written in increasing position order, so the kept slots are a prefix and the new
    length is the number of committed slots with slot_pos < position.
    """
    pos_b = jnp.broadcast_to(jnp.asarray(position, jnp.int32), cache.length.shape[1:])
    s_max = cache.max_len
    committed_lbs = jnp.arange(s_max)[None, None, :] < cache.length[:, :, None]
    keep_lbs = committed_lbs & (cache.slot_pos < pos_b[None, :, None])
    return cache.replace(length=jnp.sum(keep_lbs, axis=-1, dtype=jnp.int32))


def check_capacity(cache: Cache, needed: int) -> None:
    """Raises a clear error when `needed` slots (prompt + new tokens + block) exceed S_max."""
    if needed > cache.max_len:
        raise ValueError(
            f"the KV cache has {cache.max_len} slots but this generation needs {needed} "
            f"(prompt + new tokens + block); allocate a larger cache (max_len) or generate fewer tokens"
        )
