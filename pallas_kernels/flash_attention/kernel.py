"""Flash-attention Pallas kernels (forward, dq, dk/dv) for softmax and softplus (LSSA / LSSAR).

Layout inside the kernels is [B, H, T, D] (heads before sequence, so a tile's last two dims are
(tokens, D) on every backend). Grid: (batch, query head, tile) with the other sequence streamed by
a `lax.fori_loop` over tiles (FlashAttention-2, Dao 2023, arXiv 2307.08691). GQA: the key/value
BlockSpecs index kv head h // G; dk/dv are produced per query head and summed over the group by the
caller. Every statistic and accumulator is float32; dots take the input dtype with float32 results.

Per-row inputs (each [B, T_pad, 1] float32 / int32): `scale` multiplies q.k (1/sqrt(D) for softmax,
log(D) log(max(N, 1)) for softplus, whose q and k arrive L2-normalised), `n` is N (LSSAR only),
`qseg` / `kseg` ([B, 1, S_pad]) are segment ids, and an optional int8 mask [B, T_pad, S_pad].
Keys at index >= `s_real` are padding and never contribute.

Row statistics saved for the backward pass:
  softmax: (m, l), the max and sum of exp(s - m);  LSSA: L = sum A;
  LSSAR: (L, R_den = max(max_s R, 1e-30), Z = sum W).
Backward (per element, with dP = dO v^T and Delta = rowsum(dO * O)):
  softmax: dS = P (dP - Delta)
  LSSA:    dA = (dP - Delta) / (L + eps);                   dS = dA sigmoid(S) M
  LSSAR:   dR = (dP - Delta) / (Z + eps) * p W / R  (R > 0); dA = dR N / (L + eps) + dL M,
           dL = -sum_s dR N A / (L + eps)^2 (a row term, computed by the dq kernel first);
           the path through max_s R is dropped: it only enters through Z's epsilon (relative 1e-6).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels._common import call_options
from pallas_kernels.flash_attention.reference import L1_EPS, MASKED_SCORE

PAD_SCORE = -1e35  # padded keys: below any masked score, so they never enter a fully masked row


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static configuration of one attention call (hashable: it is a custom_vjp nondiff arg)."""

    kind: str  # "softmax" | "softplus"
    power: float | None  # LSSAR power; None = LSSA
    causal: bool
    has_mask: bool
    s_real: int  # keys at index >= s_real are padding
    offset: int  # causal: key s visible from query t iff s <= t + offset
    block_q: int
    block_k: int
    groups: int  # query heads per kv head
    backend: str
    interpret: bool | None

    @property
    def n_stats(self) -> int:
        return 1 if self.kind == "softplus" and not self.power else (2 if self.kind == "softmax" else 3)


class Rows(NamedTuple):
    """Per-row quantities of a query tile, each [bq, 1] float32."""

    scale: jax.Array
    n: jax.Array
    stats: tuple[jax.Array, ...]
    delta: jax.Array | None = None  # rowsum(dO * O), backward only
    dl: jax.Array | None = None  # LSSAR row term, backward only


def dot_f32(a: jax.Array, b: jax.Array, *, ta: bool = False, tb: bool = False) -> jax.Array:
    return jnp.dot(a.T if ta else a, b.T if tb else b, preferred_element_type=jnp.float32)


def softplus(s: jax.Array) -> jax.Array:
    return jnp.maximum(s, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(s)))


def _sigmoid(s: jax.Array) -> jax.Array:
    return 1.0 / (1.0 + jnp.exp(-s))


def _visibility(spec: Spec, q0, k0, shape, qseg, kseg, mask_tile):
    """(real, visible) bool [bq, bk] for the tile whose first query / key indices are q0, k0."""
    cols = k0 + lax.broadcasted_iota(jnp.int32, shape, 1)
    real = cols < spec.s_real
    vis = real & (qseg == kseg)
    if spec.causal:
        vis &= cols <= q0 + lax.broadcasted_iota(jnp.int32, shape, 0) + spec.offset
    if mask_tile is not None:
        vis &= mask_tile != 0
    return real, vis


def lssar_terms(spec: Spec, s, vis, rows: Rows):
    """LSSAR per-element (A, R, W) of a tile, from the saved row statistics (L, R_den, Z)."""
    l_sum, r_den, _ = rows.stats
    a = jnp.where(vis, softplus(s), 0.0)
    offset = jnp.where(rows.n <= 3, 0.0, 1.0)
    r = jnp.where(vis, jnp.maximum(rows.n * (a / (l_sum + L1_EPS)) - offset, 0.0), 0.0)
    rt = r / r_den
    w = jnp.where(rt > 0, jnp.exp(spec.power * jnp.log(jnp.where(rt > 0, rt, 1.0))), 0.0)
    return a, r, w


def _lssar_du(spec: Spec, r, w, dp, rows: Rows):
    """dR of an LSSAR tile (zero where R == 0)."""
    g = (dp - rows.delta) / (rows.stats[2] + L1_EPS)
    return jnp.where(r > 0, g * spec.power * w / jnp.where(r > 0, r, 1.0), 0.0)


def _grad_tile(spec: Spec, s, real, vis, dp, rows: Rows):
    """(P, dS) of a tile: normalised weights (for dv) and the gradient w.r.t. the scaled scores."""
    if spec.kind == "softmax":
        m, l_sum = rows.stats
        p = jnp.exp(jnp.where(real, jnp.where(vis, s, MASKED_SCORE), PAD_SCORE) - m) / l_sum
        return p, jnp.where(vis, p * (dp - rows.delta), 0.0)
    den = rows.stats[0] + L1_EPS
    if not spec.power:
        a = jnp.where(vis, softplus(s), 0.0)
        da = (dp - rows.delta) / den
        return a / den, jnp.where(vis, da * _sigmoid(s), 0.0)
    a, r, w = lssar_terms(spec, s, vis, rows)
    du = _lssar_du(spec, r, w, dp, rows)
    da = du * rows.n / den + rows.dl
    return w / (rows.stats[2] + L1_EPS), jnp.where(vis, da * _sigmoid(s), 0.0)


# Integer division inside kernels and index maps is `lax.div` (truncating; operands are >= 0 or
# clipped after): `//` lowers through `sign`, which Mosaic TPU cannot lower without a chip.


def _kv_tiles(spec: Spec, i, n_kv_tiles: int):
    """Key tiles a query tile needs: all, or (causal) those up to its last query's diagonal."""
    if not spec.causal:
        return n_kv_tiles
    last = (i + 1) * spec.block_q - 1 + spec.offset
    return jnp.clip(lax.div(last, spec.block_k) + 1, 1, n_kv_tiles)  # >= 1: no empty row sums


def _q_tile_start(spec: Spec, j):
    """First query tile that can see key tile j (causal), else 0."""
    if not spec.causal:
        return 0
    return lax.div(jnp.maximum(j * spec.block_k - spec.offset, 0), spec.block_q)


def _fwd_kernel(spec: Spec, q_ref, k_ref, v_ref, scale_ref, n_ref, qseg_ref, kseg_ref, *refs):
    mask_ref, (o_ref, *stat_refs) = (refs[0], refs[1:]) if spec.has_mask else (None, refs)
    bq, bk = spec.block_q, spec.block_k
    i = pl.program_id(2)
    q = q_ref[0, 0]  # [bq, D]
    scale, n, qseg = scale_ref[0], n_ref[0], qseg_ref[0]  # [bq, 1]
    n_kv = _kv_tiles(spec, i, k_ref.shape[2] // bk)

    def tile(j):
        k0 = pl.multiple_of(j * bk, bk)
        mask_tile = mask_ref[0, :, pl.ds(k0, bk)] if spec.has_mask else None
        real, vis = _visibility(spec, i * bq, k0, (bq, bk), qseg, kseg_ref[0, :, pl.ds(k0, bk)], mask_tile)
        s = dot_f32(q, k_ref[0, 0, pl.ds(k0, bk), :], tb=True) * scale
        return s, real, vis, v_ref[0, 0, pl.ds(k0, bk), :]

    zeros_row = jnp.zeros((bq, 1), jnp.float32)
    zeros_acc = jnp.zeros(q.shape, jnp.float32)
    if spec.kind == "softmax":

        def body(j, carry):
            m_prev, l_prev, acc = carry
            s, real, vis, v = tile(j)
            s = jnp.where(real, jnp.where(vis, s, MASKED_SCORE), PAD_SCORE)
            m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
            alpha, p = jnp.exp(m_prev - m_new), jnp.exp(s - m_new)
            return (
                m_new,
                l_prev * alpha + jnp.sum(p, axis=1, keepdims=True),
                acc * alpha + dot_f32(p.astype(v.dtype), v),
            )

        m, l_sum, acc = lax.fori_loop(
            0, n_kv, body, (jnp.full((bq, 1), -jnp.inf, jnp.float32), zeros_row, zeros_acc)
        )
        out, stats = acc / l_sum, (m, l_sum)  # not lse: m + log(l) rounds to m on a masked row
    else:

        def sums(j, carry):  # pass 1 (LSSA: the only pass): L, max A, and (LSSA) sum A v
            l_prev, a_max, acc = carry
            s, _, vis, v = tile(j)
            a = jnp.where(vis, softplus(s), 0.0)
            acc = acc if spec.power else acc + dot_f32(a.astype(v.dtype), v)
            return (
                l_prev + jnp.sum(a, axis=1, keepdims=True),
                jnp.maximum(a_max, jnp.max(a, axis=1, keepdims=True)),
                acc,
            )

        l_sum, a_max, acc = lax.fori_loop(0, n_kv, sums, (zeros_row, zeros_row, zeros_acc))
        if not spec.power:
            out, stats = acc / (l_sum + L1_EPS), (l_sum,)
        else:  # pass 2: W = (R / max R)^p; max R is R at max A (R is monotone in A)
            offset = jnp.where(n <= 3, 0.0, 1.0)
            r_den = jnp.maximum(jnp.maximum(n * (a_max / (l_sum + L1_EPS)) - offset, 0.0), 1e-30)
            rows = Rows(scale, n, (l_sum, r_den, zeros_row))

            def reweight(j, carry):
                z, acc = carry
                s, _, vis, v = tile(j)
                _, _, w = lssar_terms(spec, s, vis, rows)
                return z + jnp.sum(w, axis=1, keepdims=True), acc + dot_f32(w.astype(v.dtype), v)

            z, acc = lax.fori_loop(0, n_kv, reweight, (zeros_row, zeros_acc))
            out, stats = acc / (z + L1_EPS), (l_sum, r_den, z)
    o_ref[0, 0] = out.astype(o_ref.dtype)
    for ref, value in zip(stat_refs, stats):
        ref[0, 0] = value


def _dq_kernel(
    spec: Spec, q_ref, k_ref, v_ref, do_ref, delta_ref, scale_ref, n_ref, qseg_ref, kseg_ref, *refs
):
    mask_ref, refs = (refs[0], refs[1:]) if spec.has_mask else (None, refs)
    stat_refs, (dq_ref, dl_ref) = refs[: spec.n_stats], refs[spec.n_stats :]
    bq, bk = spec.block_q, spec.block_k
    i = pl.program_id(2)
    q, do = q_ref[0, 0], do_ref[0, 0]
    rows = Rows(scale_ref[0], n_ref[0], tuple(r[0, 0] for r in stat_refs), delta_ref[0, 0])
    n_kv = _kv_tiles(spec, i, k_ref.shape[2] // bk)

    def tile(j):
        k0 = pl.multiple_of(j * bk, bk)
        mask_tile = mask_ref[0, :, pl.ds(k0, bk)] if spec.has_mask else None
        real, vis = _visibility(
            spec, i * bq, k0, (bq, bk), qseg_ref[0], kseg_ref[0, :, pl.ds(k0, bk)], mask_tile
        )
        k, v = k_ref[0, 0, pl.ds(k0, bk), :], v_ref[0, 0, pl.ds(k0, bk), :]
        return dot_f32(q, k, tb=True) * rows.scale, real, vis, k, dot_f32(do, v, tb=True)

    dl = jnp.zeros((bq, 1), jnp.float32)
    if spec.kind == "softplus" and spec.power:  # the row term dL needs a full pass first

        def row_term(j, dl):
            s, _, vis, _, dp = tile(j)
            a, r, w = lssar_terms(spec, s, vis, rows)
            du = _lssar_du(spec, r, w, dp, rows)
            return dl - jnp.sum(du * rows.n * a, axis=1, keepdims=True)

        dl = lax.fori_loop(0, n_kv, row_term, dl) / (rows.stats[0] + L1_EPS) ** 2
        rows = rows._replace(dl=dl)

    def body(j, dq):
        s, real, vis, k, dp = tile(j)
        _, ds = _grad_tile(spec, s, real, vis, dp, rows)
        return dq + dot_f32(ds.astype(k.dtype), k)

    dq = lax.fori_loop(0, n_kv, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[0, 0] = (dq * rows.scale).astype(dq_ref.dtype)
    dl_ref[0, 0] = dl


def _dkv_kernel(
    spec: Spec, q_ref, k_ref, v_ref, do_ref, delta_ref, dl_ref, scale_ref, n_ref, qseg_ref, kseg_ref, *refs
):
    mask_ref, refs = (refs[0], refs[1:]) if spec.has_mask else (None, refs)
    stat_refs, (dk_ref, dv_ref) = refs[: spec.n_stats], refs[spec.n_stats :]
    bq, bk = spec.block_q, spec.block_k
    j = pl.program_id(2)
    k, v = k_ref[0, 0], v_ref[0, 0]  # [bk, D]
    kseg = kseg_ref[0]  # [1, bk]

    def body(i, carry):
        dk, dv = carry
        q0 = pl.multiple_of(i * bq, bq)
        at = pl.ds(q0, bq)
        rows = Rows(
            scale_ref[0, at, :],
            n_ref[0, at, :],
            tuple(r[0, 0, at, :] for r in stat_refs),
            delta_ref[0, 0, at, :],
            dl_ref[0, 0, at, :],
        )
        mask_tile = mask_ref[0, at, :] if spec.has_mask else None
        real, vis = _visibility(spec, q0, j * bk, (bq, bk), qseg_ref[0, at, :], kseg, mask_tile)
        q, do = q_ref[0, 0, at, :], do_ref[0, 0, at, :]
        s = dot_f32(q, k, tb=True) * rows.scale
        p, ds = _grad_tile(spec, s, real, vis, dot_f32(do, v, tb=True), rows)
        dv = dv + dot_f32(p.astype(do.dtype), do, ta=True)
        dk = dk + dot_f32((ds * rows.scale).astype(q.dtype), q, ta=True)
        return dk, dv

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(_q_tile_start(spec, j), q_ref.shape[2] // bq, body, (zeros, zeros))
    dk_ref[0, 0] = dk.astype(dk_ref.dtype)
    dv_ref[0, 0] = dv.astype(dv_ref.dtype)


def _specs(spec: Spec, shapes: dict[str, tuple[int, ...]], q_major: bool) -> dict[str, pl.BlockSpec]:
    """BlockSpecs over the grid (b, h, tile): `q_major` tiles queries (fwd, dq), else keys (dk/dv)."""
    g, bq, bk = spec.groups, spec.block_q, spec.block_k
    (_, _, t_pad, d), s_pad = shapes["q"], shapes["k"][2]
    tq, tk = (bq, s_pad) if q_major else (t_pad, bk)
    qi = (lambda b, h, i: (b, h, i, 0)) if q_major else (lambda b, h, i: (b, h, 0, 0))
    ki = (lambda b, h, i: (b, lax.div(h, g), 0, 0)) if q_major else (lambda b, h, i: (b, lax.div(h, g), i, 0))
    row = (lambda b, h, i: (b, i, 0)) if q_major else (lambda b, h, i: (b, 0, 0))
    head_row = (lambda b, h, i: (b, h, i, 0)) if q_major else (lambda b, h, i: (b, h, 0, 0))
    col = (lambda b, h, i: (b, 0, 0)) if q_major else (lambda b, h, i: (b, 0, i))
    mask = (lambda b, h, i: (b, i, 0)) if q_major else (lambda b, h, i: (b, 0, i))
    return {
        "q": pl.BlockSpec((1, 1, tq, d), qi),
        "k": pl.BlockSpec((1, 1, tk, d), ki),
        "row": pl.BlockSpec((1, tq, 1), row),
        "head_row": pl.BlockSpec((1, 1, tq, 1), head_row),
        "col": pl.BlockSpec((1, 1, tk), col),
        "mask": pl.BlockSpec((1, tq, tk), mask),
    }


def _grid(spec: Spec, q: jax.Array, n: int) -> tuple[int, int, int]:
    return (q.shape[0], q.shape[1], n)


def forward(spec: Spec, q, k, v, scale, n, qseg, kseg, mask):
    """-> (out [B, H, T_pad, D] in q's dtype, row statistics: tuple of [B, H, T_pad, 1] float32)."""
    sp = _specs(spec, {"q": q.shape, "k": k.shape}, q_major=True)
    in_specs = [sp["q"], sp["k"], sp["k"], sp["row"], sp["row"], sp["row"], sp["col"]]
    args = [q, k, v, scale, n, qseg, kseg]
    if spec.has_mask:
        in_specs.append(sp["mask"])
        args.append(mask)
    row_shape = jax.ShapeDtypeStruct(q.shape[:3] + (1,), jnp.float32)
    out, *stats = pl.pallas_call(
        lambda *refs: _fwd_kernel(spec, *refs),
        grid=_grid(spec, q, q.shape[2] // spec.block_q),
        in_specs=in_specs,
        out_specs=[sp["q"]] + [sp["head_row"]] * spec.n_stats,
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype)] + [row_shape] * spec.n_stats,
        name=f"flash_{spec.kind}_fwd",
        **call_options(spec.backend, spec.interpret, 3),
    )(*args)
    return out, tuple(stats)


def backward(spec: Spec, q, k, v, scale, n, qseg, kseg, mask, stats, out, d_out):
    """-> (dq, dk, dv); dk and dv are summed over each kv head's query-head group."""
    delta = jnp.sum(out.astype(jnp.float32) * d_out.astype(jnp.float32), axis=-1, keepdims=True)
    opts = call_options(spec.backend, spec.interpret, 3)
    row_shape = jax.ShapeDtypeStruct(q.shape[:3] + (1,), jnp.float32)
    extra = [mask] if spec.has_mask else []

    sp = _specs(spec, {"q": q.shape, "k": k.shape}, q_major=True)
    dq, dl = pl.pallas_call(
        lambda *refs: _dq_kernel(spec, *refs),
        grid=_grid(spec, q, q.shape[2] // spec.block_q),
        in_specs=[
            sp["q"],
            sp["k"],
            sp["k"],
            sp["q"],
            sp["head_row"],
            sp["row"],
            sp["row"],
            sp["row"],
            sp["col"],
        ]
        + [sp["mask"]] * spec.has_mask
        + [sp["head_row"]] * spec.n_stats,
        out_specs=[sp["q"], sp["head_row"]],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), row_shape],
        name=f"flash_{spec.kind}_dq",
        **opts,
    )(q, k, v, d_out, delta, scale, n, qseg, kseg, *extra, *stats)

    sp = _specs(spec, {"q": q.shape, "k": k.shape}, q_major=False)
    b, h, s_pad, d = k.shape[0], q.shape[1], k.shape[2], k.shape[3]
    kv_shape = jax.ShapeDtypeStruct((b, h, s_pad, d), jnp.float32)
    kv_out = pl.BlockSpec((1, 1, spec.block_k, d), lambda b, h, j: (b, h, j, 0))
    dk, dv = pl.pallas_call(
        lambda *refs: _dkv_kernel(spec, *refs),
        grid=_grid(spec, q, s_pad // spec.block_k),
        in_specs=[
            sp["q"],
            sp["k"],
            sp["k"],
            sp["q"],
            sp["head_row"],
            sp["head_row"],
            sp["row"],
            sp["row"],
            sp["row"],
            sp["col"],
        ]
        + [sp["mask"]] * spec.has_mask
        + [sp["head_row"]] * spec.n_stats,
        out_specs=[kv_out, kv_out],
        out_shape=[kv_shape, kv_shape],
        name=f"flash_{spec.kind}_dkv",
        **opts,
    )(q, k, v, d_out, delta, dl, scale, n, qseg, kseg, *extra, *stats)
    group_sum = lambda x: x.reshape(b, h // spec.groups, spec.groups, s_pad, d).sum(axis=2).astype(k.dtype)
    return dq, group_sum(dk), group_sum(dv)
