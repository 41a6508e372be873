"""The one KV cache every rocket decoder shares (models read it, `rocket.decode` commits to it).

Layout (L layers, B rows, S_max slots, H_kv heads, D_h head width):

  Cache.k, Cache.v : [L, B, S_max, H_kv, D_h]   keys (after RoPE) and values
  Cache.slot_pos   : [L, B, S_max] int32        logical position of each slot, -1 = empty
  Cache.length     : [L, B] int32               committed slots per layer and row

Lengths and positions are per layer because adaptive-depth models (MoD, MoR) let a layer skip a
token: that layer then writes nothing, so layers hold different numbers of slots. Attention masks
are always built from `slot_pos`, never from slot indices.

Invariant: the cache holds only committed, linear history. A model step *reads* the cache and
returns the in-flight block's K/V (`KVBlock`); the caller decides what to keep with
`commit_block` (a prefix of the block) or `commit_path` (a root-to-leaf path of a token tree).
Rollback (`rollback`) keeps the slots whose logical position is below a cut, O(1) in data
movement: later slots become invisible and are overwritten by the next commit.

A layer that skipped some of the block's tokens (MoD, MoR) marks them in `KVBlock.valid`; commits
write only valid tokens, packed in order, so each layer's `length` counts what it really holds.
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
    valid: jax.Array | None = None  # [L, B, T] bool: the layer processed the token; None = all

    def take(self, idx_bp: jax.Array) -> KVBlock:
        """The block restricted to the tokens idx[B, P] (e.g. an accepted path of a token tree)."""
        along_t = lambda x_lbt: jnp.take_along_axis(
            x_lbt, idx_bp.reshape((1,) + idx_bp.shape + (1,) * (x_lbt.ndim - 3)), axis=2
        )
        return KVBlock(
            k=along_t(self.k),
            v=along_t(self.v),
            positions=jnp.take_along_axis(self.positions, idx_bp, axis=1),
            valid=None if self.valid is None else along_t(self.valid),
        )


@flax.struct.dataclass
class LayerCache:
    """One layer's view of the cache, as the attention layer reads it."""

    k: jax.Array  # [B, S_max, H_kv, D_h]
    v: jax.Array  # [B, S_max, H_kv, D_h]
    slot_pos: jax.Array  # [B, S_max]
    length: jax.Array  # [B]
    # Streaming caches (rocket.decode.methods.streaming) store keys before RoPE and rotate them at
    # read time by slot_pos, which then holds cache-relative positions. False: keys are stored rotated.
    rope_at_read: bool = flax.struct.field(pytree_node=False, default=False)

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
    rope_at_read: bool = flax.struct.field(pytree_node=False, default=False)  # see LayerCache

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self.k[i], self.v[i], self.slot_pos[i], self.length[i], self.rope_at_read)

    def layers(self) -> LayerCache:
        """All layers stacked on a leading axis (what `nn.scan` over layers consumes)."""
        return LayerCache(self.k, self.v, self.slot_pos, self.length, self.rope_at_read)


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


def commit_block(cache: Cache, block: KVBlock, n: jax.Array | int) -> Cache:
    """Keeps the first n[b] tokens of the in-flight block in row b of every layer.

    In layer l, the kept tokens t < n[b] with valid[l, b, t] are written, packed in block order, at
    slots [length[l, b], length[l, b] + kept) and `length` advances by their number. Nothing else is
    written. The caller must ensure length + T <= S_max (`check_capacity`); writes past S_max are
    dropped rather than wrapped, so an overfull cache never overwrites committed history.
    """
    n_layers, b, t = block.k.shape[:3]
    n_b = jnp.broadcast_to(jnp.asarray(n, jnp.int32), (b,))
    keep_lbt = jnp.broadcast_to(jnp.arange(t)[None, None, :] < n_b[None, :, None], (n_layers, b, t))
    if block.valid is not None:
        keep_lbt = keep_lbt & block.valid
    # Destination slot of each kept token; dropped tokens go out of bounds (mode="drop").
    dest_lbt = cache.length[:, :, None] + jnp.cumsum(keep_lbt, axis=-1, dtype=jnp.int32) - 1
    dest_lbt = jnp.where(keep_lbt, dest_lbt, cache.max_len)
    li = jnp.arange(n_layers)[:, None, None]
    bi = jnp.arange(b)[None, :, None]
    pos_lbt = jnp.broadcast_to(block.positions[None].astype(jnp.int32), (n_layers, b, t))
    put = lambda buf, x: buf.at[li, bi, dest_lbt].set(x.astype(buf.dtype), mode="drop")
    return cache.replace(
        k=put(cache.k, block.k),
        v=put(cache.v, block.v),
        slot_pos=put(cache.slot_pos, pos_lbt),
        length=cache.length + jnp.sum(keep_lbt, axis=-1, dtype=jnp.int32),
    )


def commit_path(cache: Cache, block: KVBlock, path_bp: jax.Array, n: jax.Array | int) -> Cache:
    """Commits the first n[b] tokens of the path path[b, :] (block indices, root first) of a tree.

    The tree's tokens carry logical positions prefix_len + depth, so a root-to-leaf path is linear
    history once committed: `commit_path` is `commit_block` on the block restricted to the path.
    """
    return commit_block(cache, block.take(path_bp), n)


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
