"""Split-K verification attention (flash-decoding; Dao et al. 2023) for a block of in-flight tokens.

Decoding is memory-bound: the kernel reads each committed K/V slot once for *all* the block's
queries of a kv head (T tokens x G grouped query heads = R rows), splits the cache axis into
`n_splits` chunks run in parallel, and skips the tiles beyond each row's committed length. Each
program returns float32 partial statistics of its chunk; `api.verify_attention` merges the chunks
with the in-block part (T x T, masked by the tree's ancestor mask) in plain jnp.

Grid (B, H_kv, n_splits). The cache is read in its native [B, S, H_kv, D] layout (no transpose copy)
on GPU; Mosaic TPU needs (S, D) as the tiled dims, so there the caller passes it heads-major.
Modes and their partials (per row, over the chunk's visible slots):
  softmax      (m, l, acc):  m = max s, l = sum exp(s - m), acc = sum exp(s - m) v
  lssa         (L, acc):     L = sum A, acc = sum A v                 (A = softplus(s))
  lssar_stats  (L, A_max)                                              pass 1 of LSSAR
  lssar_apply  (Z, acc):     Z = sum W, acc = sum W v, W from the merged (L, R_den)   pass 2
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels._common import call_options
from pallas_kernels.flash_attention.kernel import Rows, dot_f32, lssar_terms, softplus
from pallas_kernels.flash_attention.reference import MASKED_SCORE, NORM_EPS

MODES = ("softmax", "lssa", "lssar_stats", "lssar_apply")
_N_OUT = {"softmax": 3, "lssa": 2, "lssar_stats": 2, "lssar_apply": 2}
_HAS_ACC = {"softmax": True, "lssa": True, "lssar_stats": False, "lssar_apply": True}


@dataclasses.dataclass(frozen=True)
class Spec:
    mode: str
    power: float | None
    has_pos: bool  # slot positions given: slot s visible iff slot_pos < q_pos (as well as s < length)
    normalize_k: bool  # softplus: L2-normalise each key tile in the kernel (the cache stores raw keys)
    heads_major: bool  # the cache arrives as [B, H_kv, S, D] (Mosaic TPU cannot tile [.., S, H_kv, D])
    block_k: int
    backend: str
    interpret: bool | None


def _split_kernel(spec: Spec, len_ref, q_ref, k_ref, v_ref, scale_ref, n_ref, qpos_ref, spos_ref, *refs):
    n_in = 2 if spec.mode == "lssar_apply" else 0
    row_stats, outs = tuple(r[...] for r in refs[:n_in]), refs[n_in:]
    bk, chunk = spec.block_k, k_ref.shape[0]
    start = pl.program_id(2) * chunk
    length = len_ref[0, 0]
    n_tiles = jnp.clip(lax.div(length - start + bk - 1, bk), 0, chunk // bk)  # lax.div: see flash kernel
    q, scale, q_pos = q_ref[...], scale_ref[...], qpos_ref[...]  # [R, D], [R, 1], [R, 1]
    rows, d = q.shape
    zeros_row, zeros_acc = jnp.zeros((rows, 1), jnp.float32), jnp.zeros((rows, d), jnp.float32)

    def tile(j):
        k0 = pl.multiple_of(j * bk, bk)
        vis = start + k0 + lax.broadcasted_iota(jnp.int32, (rows, bk), 1) < length
        if spec.has_pos:
            vis &= spos_ref[:, pl.ds(k0, bk)] < q_pos
        k = k_ref[pl.ds(k0, bk), :]
        if spec.normalize_k:
            k32 = k.astype(jnp.float32)
            k = (k32 * lax.rsqrt(jnp.sum(k32 * k32, axis=1, keepdims=True) + NORM_EPS)).astype(k.dtype)
        return dot_f32(q, k, tb=True) * scale, vis, v_ref[pl.ds(k0, bk), :]

    if spec.mode == "softmax":

        def body(j, carry):
            m_prev, l_prev, acc = carry
            s, vis, v = tile(j)
            s = jnp.where(vis, s, MASKED_SCORE)
            m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
            alpha, p = jnp.exp(m_prev - m_new), jnp.exp(s - m_new)
            return (
                m_new,
                l_prev * alpha + jnp.sum(p, 1, keepdims=True),
                acc * alpha + dot_f32(p.astype(v.dtype), v),
            )

        init = (jnp.full((rows, 1), -jnp.inf, jnp.float32), zeros_row, zeros_acc)
    elif spec.mode == "lssar_apply":
        stat_rows = Rows(scale, n_ref[...], (row_stats[0], row_stats[1], zeros_row))

        def body(j, carry):
            z, acc = carry
            s, vis, v = tile(j)
            _, _, w = lssar_terms(spec, s, vis, stat_rows)
            return z + jnp.sum(w, 1, keepdims=True), acc + dot_f32(w.astype(v.dtype), v)

        init = (zeros_row, zeros_acc)
    else:  # lssa: (L, acc); lssar_stats: (L, A_max)

        def body(j, carry):
            l_sum, other = carry
            s, vis, v = tile(j)
            a = jnp.where(vis, softplus(s), 0.0)
            if spec.mode == "lssa":
                other = other + dot_f32(a.astype(v.dtype), v)
            else:
                other = jnp.maximum(other, jnp.max(a, axis=1, keepdims=True))
            return l_sum + jnp.sum(a, 1, keepdims=True), other

        init = (zeros_row, zeros_acc if spec.mode == "lssa" else zeros_row)
    results = lax.fori_loop(0, n_tiles, body, init)
    if spec.mode == "softmax":  # acc first, like the other modes with an accumulator
        results = (results[2], results[0], results[1])
    elif _HAS_ACC[spec.mode]:
        results = (results[1], results[0])
    for ref, value in zip(outs, results):
        ref[...] = value


def split_partials(
    spec: Spec, lengths, q, k_cache, v_cache, scale, n, q_pos, slot_pos, n_splits, row_stats=()
):
    """Partials of every cache chunk.

    q [B, H_kv, R, D]; k/v cache [B, S_pad, H_kv, D] or (heads_major) [B, H_kv, S_pad, D], S_pad a
    multiple of n_splits * block_k;
    scale, n, q_pos [B, R, 1]; slot_pos [B, 1, S_pad]; lengths [B, 1, 1]; row_stats (lssar_apply):
    (L, R_den) each [B, H_kv, R, 1]. Returns a tuple of [B, H_kv, n_splits, R, D or 1] float32.
    """
    b, kv_heads, rows, d = q.shape
    chunk = k_cache.shape[2 if spec.heads_major else 1] // n_splits
    sq = pl.squeezed
    row_spec = pl.BlockSpec((sq, rows, 1), lambda b, h, p: (b, 0, 0))
    head_row_spec = pl.BlockSpec((sq, sq, rows, 1), lambda b, h, p: (b, h, 0, 0))
    if spec.heads_major:
        kv_spec = pl.BlockSpec((sq, sq, chunk, d), lambda b, h, p: (b, h, p, 0))
    else:
        kv_spec = pl.BlockSpec((sq, chunk, sq, d), lambda b, h, p: (b, p, h, 0))
    in_specs = [
        pl.BlockSpec((sq, 1, 1), lambda b, h, p: (b, 0, 0)),
        pl.BlockSpec((sq, sq, rows, d), lambda b, h, p: (b, h, 0, 0)),
        kv_spec,
        kv_spec,
        row_spec,
        row_spec,
        row_spec,
        pl.BlockSpec((sq, 1, chunk), lambda b, h, p: (b, 0, p)),
    ] + [head_row_spec] * len(row_stats)
    widths = ([d] if _HAS_ACC[spec.mode] else []) + [1] * (_N_OUT[spec.mode] - _HAS_ACC[spec.mode])
    return pl.pallas_call(
        lambda *refs: _split_kernel(spec, *refs),
        grid=(b, kv_heads, n_splits),
        in_specs=in_specs,
        out_specs=[pl.BlockSpec((sq, sq, sq, rows, w), lambda b, h, p: (b, h, p, 0, 0)) for w in widths],
        out_shape=[jax.ShapeDtypeStruct((b, kv_heads, n_splits, rows, w), jnp.float32) for w in widths],
        name=f"verify_{spec.mode}",
        **call_options(spec.backend, spec.interpret, 3),
    )(lengths, q, k_cache, v_cache, scale, n, q_pos, slot_pos, *row_stats)
