"""Public entry point: `pattention(x, k_p, v_p, tau=..., norm=...)`, the fused Pallas Pattention
with a custom VJP; same call and result as `reference.pattention_reference`."""

from __future__ import annotations

import functools

import jax

from pallas_kernels._common import feature_size, pad_to, resolve_backend, round_up, tile_size
from pallas_kernels.pattention import kernel
from pallas_kernels.pattention.reference import NORMS


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(spec: kernel.Spec, x, k, v):
    return kernel.forward(spec, x, k, v)[0]


def _fused_fwd(spec, x, k, v):
    out, stats = kernel.forward(spec, x, k, v)
    return out, (x, k, v, stats)


def _fused_bwd(spec, residuals, d_out):
    x, k, v, stats = residuals
    return kernel.backward(spec, x, k, v, stats, d_out)


_fused.defvjp(_fused_fwd, _fused_bwd)


def pattention(
    x: jax.Array,
    k_p: jax.Array,
    v_p: jax.Array,
    *,
    tau: float,
    norm: str = "l2_norm_gelu",
    block_m: int = 128,
    block_n: int = 128,
    block_out: int = 512,
    backend: str = "auto",
    interpret: bool | None = None,
) -> jax.Array:
    """Theta(x K_P^T) V_P for x [..., d_in], K_P [n, d_in], V_P [n, d_out] -> [..., d_out] in x's dtype.

    tau is sqrt(n_scale) (pinned at the creation-time n after growth). Differentiable in x, K_P and V_P.
    Zero-padding n to the tile is exact: padded tokens are masked (softmax) or contribute 0.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown Pattention norm {norm!r}; available: {NORMS}")
    n, d_in = k_p.shape
    if x.shape[-1] != d_in or v_p.shape[0] != n:
        raise ValueError(
            f"shapes x {x.shape}, k_p {k_p.shape}, v_p {v_p.shape} do not fit "
            "[..., d_in], [n, d_in], [n, d_out]"
        )
    backend = resolve_backend(backend)
    lead, d_out = x.shape[:-1], v_p.shape[1]
    x2 = x.reshape(-1, d_in)
    m = x2.shape[0]
    bm, bn = tile_size(m, block_m), tile_size(n, block_n)
    d_in_pad, d_out_pad = feature_size(d_in, backend), feature_size(d_out, backend)
    bo = block_out if d_out_pad % block_out == 0 else d_out_pad  # output column tiles (or one)
    spec = kernel.Spec(norm, float(tau), n, bm, bn, bo, backend, interpret)
    out = _fused(
        spec,
        pad_to(pad_to(x2, 0, round_up(m, bm)), 1, d_in_pad),
        pad_to(pad_to(k_p.astype(x.dtype), 0, round_up(n, bn)), 1, d_in_pad),
        pad_to(pad_to(v_p.astype(x.dtype), 0, round_up(n, bn)), 1, d_out_pad),
    )
    return out[:m, :d_out].reshape(*lead, d_out)
