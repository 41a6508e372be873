"""Fused Pattention Pallas kernels: forward in two passes over parameter-token tiles, backward with
a row-term pass, so the [tokens, n] score matrix never goes to HBM (architectures.md section 4 (8)).

Rows are tokens (x flattened to [M, d_in]); columns are the n parameter tokens, streamed in tiles
of `block_n` by a `lax.fori_loop`. Per row the kernels keep float32 statistics of the full row:
  l2_norm_gelu: ss = sum A^2;  gelu_l2_norm: ss = sum gelu(A)^2;  softmax: (m, l) online.
Kernels (each recomputes A = x K^T tile by tile instead of storing it):
  stats  grid (M / bm):            pass 1 -> row statistics
  apply  grid (M / bm, d_out / bo): out = Theta(A) V, Theta from the statistics
  dx     grid (M / bm):            pass 1: c = row term (below); pass 2: dx = dA K
  dkv    grid (n / bn):            dV = Theta^T dOut, dK = dA^T x, streaming all row tiles
Backward, with dTheta = dOut V^T and inv = 1 / sqrt(ss + 1e-12):
  l2_norm_gelu: z = tau inv A, dz = dTheta gelu'(z), c = sum dz A,  dA = tau inv dz - tau inv^3 c A
  gelu_l2_norm: c = sum dTheta G, dG = tau inv dTheta - tau inv^3 c G,  dA = dG gelu'(A)
  softmax:      P = exp(A - m) / l, c = sum P dTheta,  dA = n P (dTheta - c)
Parameter tokens at index >= n_real are padding (zero rows for the L2 norms, masked for softmax).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels._common import call_options
from pallas_kernels.pattention.reference import NORM_EPS

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class Spec:
    norm: str
    tau: float
    n_real: int
    block_m: int
    block_n: int
    block_out: int
    backend: str
    interpret: bool | None

    @property
    def n_stats(self) -> int:
        return 2 if self.norm == "softmax" else 1


def _dot(a, b, *, ta: bool = False, tb: bool = False):
    return jnp.dot(a.T if ta else a, b.T if tb else b, preferred_element_type=jnp.float32)


# erf(x) = x P(x^2) / Q(x^2) on [-4, 4] (Eigen's / XLA's float32 rational approximation; max abs
# error 4e-7, measured against math.erf): the Triton lowering has no erf primitive.
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def _erf(x):
    x = jnp.clip(x, -4.0, 4.0)
    x2 = x * x
    p, q = jnp.full_like(x, _ERF_P[0]), jnp.full_like(x, _ERF_Q[0])
    for c in _ERF_P[1:]:
        p = p * x2 + c
    for c in _ERF_Q[1:]:
        q = q * x2 + c
    return x * p / q


def _gelu(z):
    return 0.5 * z * (1.0 + _erf(z * _SQRT_HALF))


def _gelu_grad(z):
    return 0.5 * (1.0 + _erf(z * _SQRT_HALF)) + z * jnp.exp(-0.5 * z * z) * _INV_SQRT_2PI


def _scores(spec: Spec, x, k, col0: int, shape):
    """A = x k^T of a tile with padded parameter tokens neutralised (0, or -1e30 for softmax)."""
    valid = col0 + lax.broadcasted_iota(jnp.int32, shape, 1) < spec.n_real
    return jnp.where(valid, _dot(x, k, tb=True), -1e30 if spec.norm == "softmax" else 0.0)


def _stats_update(spec: Spec, a, stats):
    if spec.norm == "softmax":
        m_prev, l_prev = stats
        m_new = jnp.maximum(m_prev, jnp.max(a, axis=1, keepdims=True))
        return m_new, l_prev * jnp.exp(m_prev - m_new) + jnp.sum(jnp.exp(a - m_new), axis=1, keepdims=True)
    g = _gelu(a) if spec.norm == "gelu_l2_norm" else a
    return (stats[0] + jnp.sum(g * g, axis=1, keepdims=True),)


def _theta(spec: Spec, a, stats):
    if spec.norm == "softmax":
        return spec.n_real * jnp.exp(a - stats[0]) / stats[1]
    inv = 1.0 / jnp.sqrt(stats[0] + NORM_EPS)
    if spec.norm == "l2_norm_gelu":
        return _gelu(a * (spec.tau * inv))
    return _gelu(a) * (spec.tau * inv)


def _row_term(spec: Spec, a, d_theta, stats):
    """This tile's part of the row term c (see module docstring)."""
    if spec.norm == "softmax":
        return jnp.sum(jnp.exp(a - stats[0]) / stats[1] * d_theta, axis=1, keepdims=True)
    if spec.norm == "l2_norm_gelu":
        z = a * (spec.tau / jnp.sqrt(stats[0] + NORM_EPS))
        return jnp.sum(d_theta * _gelu_grad(z) * a, axis=1, keepdims=True)
    return jnp.sum(d_theta * _gelu(a), axis=1, keepdims=True)


def _grad_scores(spec: Spec, a, d_theta, stats, c):
    """dL/dA of a tile given the row term c."""
    if spec.norm == "softmax":
        p = jnp.exp(a - stats[0]) / stats[1]
        return spec.n_real * p * (d_theta - c)
    inv = 1.0 / jnp.sqrt(stats[0] + NORM_EPS)
    if spec.norm == "l2_norm_gelu":
        dz = d_theta * _gelu_grad(a * (spec.tau * inv))
        return spec.tau * inv * dz - spec.tau * inv**3 * c * a
    g = _gelu(a)
    return (spec.tau * inv * d_theta - spec.tau * inv**3 * c * g) * _gelu_grad(a)


def _init_stats(spec: Spec, rows: int):
    zeros = jnp.zeros((rows, 1), jnp.float32)
    return (jnp.full((rows, 1), -jnp.inf, jnp.float32), zeros) if spec.norm == "softmax" else (zeros,)


def _stats_kernel(spec: Spec, x_ref, k_ref, *stat_refs):
    x, bn = x_ref[...], spec.block_n

    def body(j, stats):
        n0 = pl.multiple_of(j * bn, bn)
        return _stats_update(spec, _scores(spec, x, k_ref[pl.ds(n0, bn), :], n0, (x.shape[0], bn)), stats)

    stats = lax.fori_loop(0, k_ref.shape[0] // bn, body, _init_stats(spec, x.shape[0]))
    for ref, value in zip(stat_refs, stats):
        ref[...] = value


def _apply_kernel(spec: Spec, x_ref, k_ref, v_ref, *refs):
    stats, o_ref = tuple(r[...] for r in refs[:-1]), refs[-1]
    x, bn = x_ref[...], spec.block_n

    def body(j, acc):
        n0 = pl.multiple_of(j * bn, bn)
        theta = _theta(spec, _scores(spec, x, k_ref[pl.ds(n0, bn), :], n0, (x.shape[0], bn)), stats)
        v = v_ref[pl.ds(n0, bn), :]
        return acc + _dot(theta.astype(v.dtype), v)

    acc = lax.fori_loop(0, k_ref.shape[0] // bn, body, jnp.zeros(o_ref.shape, jnp.float32))
    o_ref[...] = acc.astype(o_ref.dtype)


def _dx_kernel(spec: Spec, x_ref, k_ref, v_ref, do_ref, *refs):
    stats, (dx_ref, c_ref) = tuple(r[...] for r in refs[: spec.n_stats]), refs[spec.n_stats :]
    x, do, bn = x_ref[...], do_ref[...], spec.block_n
    n_tiles = k_ref.shape[0] // bn

    def tile(j):
        n0 = pl.multiple_of(j * bn, bn)
        k = k_ref[pl.ds(n0, bn), :]
        return k, _scores(spec, x, k, n0, (x.shape[0], bn)), _dot(do, v_ref[pl.ds(n0, bn), :], tb=True)

    def row_term(j, c):
        _, a, d_theta = tile(j)
        return c + _row_term(spec, a, d_theta, stats)

    c = lax.fori_loop(0, n_tiles, row_term, jnp.zeros((x.shape[0], 1), jnp.float32))

    def body(j, dx):
        k, a, d_theta = tile(j)
        return dx + _dot(_grad_scores(spec, a, d_theta, stats, c).astype(k.dtype), k)

    dx = lax.fori_loop(0, n_tiles, body, jnp.zeros(x.shape, jnp.float32))
    dx_ref[...] = dx.astype(dx_ref.dtype)
    c_ref[...] = c


def _dkv_kernel(spec: Spec, x_ref, k_ref, v_ref, do_ref, c_ref, *refs):
    stat_refs, (dk_ref, dv_ref) = refs[: spec.n_stats], refs[spec.n_stats :]
    k, v, bm = k_ref[...], v_ref[...], spec.block_m
    n0 = pl.program_id(0) * spec.block_n

    def body(i, carry):
        dk, dv = carry
        at = pl.ds(pl.multiple_of(i * bm, bm), bm)
        x, do = x_ref[at, :], do_ref[at, :]
        stats = tuple(r[at, :] for r in stat_refs)
        a = _scores(spec, x, k, n0, (bm, k.shape[0]))
        d_a = _grad_scores(spec, a, _dot(do, v, tb=True), stats, c_ref[at, :])
        dv = dv + _dot(_theta(spec, a, stats).astype(do.dtype), do, ta=True)
        return dk + _dot(d_a.astype(x.dtype), x, ta=True), dv

    init = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    dk, dv = lax.fori_loop(0, x_ref.shape[0] // bm, body, init)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def forward(spec: Spec, x, k, v):
    """x [M_pad, d_in], k [n_pad, d_in], v [n_pad, d_out] -> (out [M_pad, d_out], row statistics)."""
    (m, d_in), d_out, bm = x.shape, v.shape[1], spec.block_m
    row = pl.BlockSpec((bm, 1), lambda i, *_: (i, 0))
    stat_shape = jax.ShapeDtypeStruct((m, 1), jnp.float32)
    stats = pl.pallas_call(
        lambda *refs: _stats_kernel(spec, *refs),
        grid=(m // bm,),
        in_specs=[pl.BlockSpec((bm, d_in), lambda i: (i, 0)), pl.BlockSpec(k.shape, lambda i: (0, 0))],
        out_specs=[row] * spec.n_stats,
        out_shape=[stat_shape] * spec.n_stats,
        name=f"pattention_{spec.norm}_stats",
        **call_options(spec.backend, spec.interpret, 1),
    )(x, k)
    bo = spec.block_out
    out = pl.pallas_call(
        lambda *refs: _apply_kernel(spec, *refs),
        grid=(m // bm, d_out // bo),
        in_specs=[
            pl.BlockSpec((bm, d_in), lambda i, o: (i, 0)),
            pl.BlockSpec(k.shape, lambda i, o: (0, 0)),
            pl.BlockSpec((v.shape[0], bo), lambda i, o: (0, o)),
        ]
        + [row] * spec.n_stats,
        out_specs=pl.BlockSpec((bm, bo), lambda i, o: (i, o)),
        out_shape=jax.ShapeDtypeStruct((m, d_out), x.dtype),
        name=f"pattention_{spec.norm}_apply",
        **call_options(spec.backend, spec.interpret, 2),
    )(x, k, v, *stats)
    return out, tuple(stats)


def backward(spec: Spec, x, k, v, stats, d_out):
    """-> (dx, dk, dv) for the padded operands of `forward`."""
    (m, d_in), bm, bn = x.shape, spec.block_m, spec.block_n
    opts = call_options(spec.backend, spec.interpret, 1)
    full = lambda a: pl.BlockSpec(a.shape, lambda i: (0, 0))
    rows = lambda width: pl.BlockSpec((bm, width), lambda i: (i, 0))
    dx, c = pl.pallas_call(
        lambda *refs: _dx_kernel(spec, *refs),
        grid=(m // bm,),
        in_specs=[rows(d_in), full(k), full(v), rows(d_out.shape[1])] + [rows(1)] * spec.n_stats,
        out_specs=[rows(d_in), rows(1)],
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((m, 1), jnp.float32)],
        name=f"pattention_{spec.norm}_dx",
        **opts,
    )(x, k, v, d_out, *stats)
    cols = lambda width: pl.BlockSpec((bn, width), lambda j: (j, 0))
    dk, dv = pl.pallas_call(
        lambda *refs: _dkv_kernel(spec, *refs),
        grid=(k.shape[0] // bn,),
        in_specs=[full(x), cols(d_in), cols(v.shape[1]), full(d_out), full(c)] + [full(s) for s in stats],
        out_specs=[cols(d_in), cols(v.shape[1])],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        name=f"pattention_{spec.norm}_dkv",
        **opts,
    )(x, k, v, d_out, c, *stats)
    return dx, dk, dv
