"""Public entry point: `verify_attention(...)`, the decode/verify step's attention (forward only).

Same call and result as `reference.verify_reference`: the kernel streams the committed cache
(split-K, see kernel.py) and the T x T in-block part is merged in plain jnp. Kinds as in
flash_attention: "softmax", or "softplus" (LSSA; LSSAR with power > 0, two passes over the cache).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from pallas_kernels._common import feature_size, pad_to, resolve_backend, round_up, tile_size
from pallas_kernels.flash_attention.kernel import Rows, lssar_terms, softplus
from pallas_kernels.flash_attention.reference import KINDS, L1_EPS, MASKED_SCORE, l2_normalize, softplus_scale
from pallas_kernels.verify_attention import kernel
from pallas_kernels.verify_attention.reference import cache_visibility


def verify_attention(
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
    block_k: int = 128,
    n_splits: int | None = None,
    backend: str = "auto",
    interpret: bool | None = None,
) -> jax.Array:
    """Attention of q [B, T, H, D] over the committed cache k/v [B, S, H_kv, D] (`lengths` [B]
    committed slots; optionally `slot_pos` [B, S] < `q_pos` [B, T]) and the block's own k/v
    [B, T, H_kv, D] under `block_mask` [B, T, T] -> [B, T, H, D] in q's dtype. Forward only.

    n_splits: cache chunks processed in parallel (default: up to 16, one tile each at least); S is
    padded to a multiple of n_splits * block_k (a copy: allocate caches at such a size to avoid it).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; available: {KINDS}")
    if power is not None and (kind != "softplus" or power < 0):
        raise ValueError(f"power={power} needs kind='softplus' and power >= 0 (0 or None = LSSA)")
    if (slot_pos is None) != (q_pos is None):
        raise ValueError("slot_pos and q_pos go together (both or neither)")
    b, t, h, d = q.shape
    s, kv_heads = k_cache.shape[1], k_cache.shape[2]
    if (
        k_cache.shape != v_cache.shape
        or k_block.shape != (b, t, kv_heads, d)
        or v_block.shape != k_block.shape
    ):
        raise ValueError(
            f"cache {k_cache.shape}/{v_cache.shape} and block {k_block.shape}/{v_block.shape} "
            f"do not fit q {q.shape}"
        )
    if h % kv_heads:
        raise ValueError(f"{h} query heads are not divisible by {kv_heads} key/value heads")
    if block_mask.shape != (b, t, t) or lengths.shape != (b,):
        raise ValueError(f"block_mask {block_mask.shape} must be (B, T, T) and lengths {lengths.shape} (B,)")
    g, rows = h // kv_heads, t * (h // kv_heads)
    bk = tile_size(s, block_k)
    n_splits = n_splits or max(1, min(16, s // bk))
    s_pad = round_up(s, bk * n_splits)
    rows_pad = tile_size(rows, 1 << 30)

    if kind == "softmax":
        scale_bt, n_bt = jnp.full((b, t), 1.0 / math.sqrt(d), jnp.float32), jnp.zeros((b, t), jnp.float32)
    else:
        n_cache = jnp.sum(cache_visibility(lengths, s, t, slot_pos, q_pos), -1)
        n_bt = (n_cache + jnp.sum(block_mask.astype(bool), -1)).astype(jnp.float32)
        scale_bt = softplus_scale(n_bt, d)
        q, k_block = l2_normalize(q).astype(q.dtype), l2_normalize(k_block).astype(k_block.dtype)
    per_row = lambda x_bt: jnp.repeat(x_bt, g, axis=1)[:, None, :, None]  # [B, 1, R, 1], rows (t, g)
    kernel_row = lambda x_bt, dtype: pad_to(per_row(x_bt)[:, 0].astype(dtype), 1, rows_pad)  # [B, R_pad, 1]
    q_rows = q.reshape(b, t, kv_heads, g, d).transpose(0, 2, 1, 3, 4).reshape(b, kv_heads, rows, d)
    backend = resolve_backend(backend)
    heads_major = backend == "tpu"  # a transpose copy of the cache: store it heads-major on TPU instead
    d_pad = feature_size(d, backend)  # Triton: a power of two (a padded copy of the cache otherwise)
    kv_pad = lambda x: pad_to(
        pad_to(x.astype(q.dtype).transpose(0, 2, 1, 3) if heads_major else x.astype(q.dtype), 3, d_pad),
        2 if heads_major else 1,
        s_pad,
    )
    mode = "softmax" if kind == "softmax" else ("lssar_stats" if power else "lssa")
    spec = kernel.Spec(
        mode=mode,
        power=float(power) if power else None,
        has_pos=slot_pos is not None,
        normalize_k=kind == "softplus",
        heads_major=heads_major,
        block_k=bk,
        backend=backend,
        interpret=interpret,
    )
    args = (
        lengths.astype(jnp.int32)[:, None, None],
        pad_to(pad_to(q_rows, 2, rows_pad), 3, d_pad),
        kv_pad(k_cache),
        kv_pad(v_cache),
        kernel_row(scale_bt, jnp.float32),
        kernel_row(n_bt, jnp.float32),
        kernel_row(jnp.zeros((b, t), jnp.int32) if q_pos is None else q_pos, jnp.int32),
        pad_to(jnp.zeros((b, s), jnp.int32) if slot_pos is None else slot_pos.astype(jnp.int32), 1, s_pad)[
            :, None
        ],
    )
    partials = lambda spec, *row_stats: [
        x[..., :rows, :d] for x in kernel.split_partials(spec, *args, n_splits, row_stats)
    ]

    # The in-block part: [B, H_kv, R, T] scores of the block's queries against the block's keys.
    k_blk, v_blk = (x.transpose(0, 2, 1, 3).astype(jnp.float32) for x in (k_block, v_block))
    scale_r, n_r = per_row(scale_bt), per_row(n_bt)
    s_blk = jnp.einsum("bhrd,bhtd->bhrt", q_rows.astype(jnp.float32), k_blk) * scale_r
    vis_blk = jnp.repeat(block_mask.astype(bool), g, axis=1)[:, None]  # [B, 1, R, T]
    if mode == "softmax":
        acc_p, m_p, l_p = partials(spec)
        s_blk = jnp.where(vis_blk, s_blk, MASKED_SCORE)
        m = jnp.maximum(jnp.max(m_p, axis=2), jnp.max(s_blk, axis=-1, keepdims=True))
        w_p, p_blk = jnp.exp(m_p - m[:, :, None]), jnp.exp(s_blk - m)
        l_sum = jnp.sum(l_p * w_p, axis=2) + jnp.sum(p_blk, axis=-1, keepdims=True)
        out = (jnp.sum(acc_p * w_p, axis=2) + p_blk @ v_blk) / l_sum
    elif mode == "lssa":
        acc_p, l_p = partials(spec)
        a_blk = jnp.where(vis_blk, softplus(s_blk), 0.0)
        out = (jnp.sum(acc_p, axis=2) + a_blk @ v_blk) / (
            jnp.sum(l_p, axis=2) + jnp.sum(a_blk, -1, keepdims=True) + L1_EPS
        )
    else:  # LSSAR: merge (L, A_max), then the re-weighting pass
        l_p, a_max_p = partials(spec)
        a_blk = jnp.where(vis_blk, softplus(s_blk), 0.0)
        l_sum = jnp.sum(l_p, axis=2) + jnp.sum(a_blk, -1, keepdims=True)
        a_max = jnp.maximum(jnp.max(a_max_p, axis=2), jnp.max(a_blk, -1, keepdims=True))
        offset = jnp.where(n_r <= 3, 0.0, 1.0)
        r_den = jnp.maximum(jnp.maximum(n_r * (a_max / (l_sum + L1_EPS)) - offset, 0.0), 1e-30)
        stats = (pad_to(l_sum, 2, rows_pad), pad_to(r_den, 2, rows_pad, 1.0))
        acc_p, z_p = partials(dataclasses.replace(spec, mode="lssar_apply"), *stats)
        _, _, w_blk = lssar_terms(spec, s_blk, vis_blk, Rows(scale_r, n_r, (l_sum, r_den, None)))
        out = (jnp.sum(acc_p, axis=2) + w_blk @ v_blk) / (
            jnp.sum(z_p, axis=2) + jnp.sum(w_blk, -1, keepdims=True) + L1_EPS
        )
    return out.reshape(b, kv_heads, t, g, d).transpose(0, 2, 1, 3, 4).reshape(b, t, h, d).astype(q.dtype)
