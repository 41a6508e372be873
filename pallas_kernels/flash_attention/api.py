"""Public entry point of the flash-attention kernels: `attention(q, k, v, kind=..., ...)`.

Same call and result as `reference.attention_reference` (the contract), computed by the Pallas
kernels in `kernel.py` with a `jax.custom_vjp` (a `pallas_call` cannot be linearised by JAX).
Softplus inputs are L2-normalised and the per-row scale log(D) log(max(N, 1)) is computed here, in
plain jnp (cheap, elementwise; autodiff covers it), so the kernels only see q^, k^ and a row scale.
In bf16, q^ and k^ enter the kernel rounded to bf16 (the dots accumulate in f32; the row scale
and every statistic are f32). Masks: `causal` and `segment_ids` cost nothing in memory; a dense
`mask` [B, T, S] is streamed as int8 tiles (one byte per score: exact for any mask, e.g. a
decoding cache or a token tree).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from pallas_kernels._common import feature_size, pad_to, resolve_backend, round_up, tile_size
from pallas_kernels.flash_attention import kernel
from pallas_kernels.flash_attention.reference import (
    KINDS,
    SegmentIds,
    l2_normalize,
    softplus_scale,
    split_segment_ids,
    visibility,
)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(spec: kernel.Spec, q, k, v, scale, n, qseg, kseg, mask):
    return kernel.forward(spec, q, k, v, scale, n, qseg, kseg, mask)[0]


def _flash_fwd(spec, q, k, v, scale, n, qseg, kseg, mask):
    out, stats = kernel.forward(spec, q, k, v, scale, n, qseg, kseg, mask)
    return out, (q, k, v, scale, n, qseg, kseg, mask, stats, out)


def _flash_bwd(spec, residuals, d_out):
    q, k, v, scale, n, qseg, kseg, mask, stats, out = residuals
    dq, dk, dv = kernel.backward(spec, q, k, v, scale, n, qseg, kseg, mask, stats, out, d_out)
    return dq, dk, dv, None, None, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    kind: str = "softmax",
    mask: jax.Array | None = None,
    segment_ids: SegmentIds | None = None,
    causal: bool = False,
    power: float | None = None,
    block_q: int = 128,
    block_k: int = 128,
    backend: str = "auto",
    interpret: bool | None = None,
) -> jax.Array:
    """Flash attention q [B, T, H, D], k/v [B, S, H_kv, D] -> [B, T, H, D] in q's dtype.

    kind: "softmax" (scale 1/sqrt(D)) or "softplus" (LSSA; with `power` > 0, LSSAR).
    mask: optional bool [B, T, S]; segment_ids: [B, T] (T == S) or (q_seg [B, T], kv_seg [B, S]);
    causal: key s visible from query t iff s <= t + S - T. All three are AND-ed.
    backend: "triton" (GPU), "tpu" (Mosaic TPU) or "auto"; interpret: None = on CPU.
    Differentiable in q, k, v (custom VJP with Pallas dq and dk/dv kernels).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; available: {KINDS}")
    if power is not None and (kind != "softplus" or power < 0):
        raise ValueError(f"power={power} needs kind='softplus' and power >= 0 (0 or None = LSSA)")
    b, t, h, d = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    if k.shape != v.shape or k.shape[0] != b or k.shape[3] != d:
        raise ValueError(f"k {k.shape} and v {v.shape} must both be [B, S, H_kv, D] matching q {q.shape}")
    if h % kv_heads:
        raise ValueError(f"{h} query heads are not divisible by {kv_heads} key/value heads")
    if mask is not None and mask.shape != (b, t, s):
        raise ValueError(f"mask shape {mask.shape} != (B, T, S) = {(b, t, s)}")
    bq, bk = tile_size(t, block_q), tile_size(s, block_k)
    t_pad, s_pad = round_up(t, bq), round_up(s, bk)
    spec = kernel.Spec(
        kind=kind,
        power=float(power) if power else None,
        causal=causal,
        has_mask=mask is not None,
        s_real=s,
        offset=s - t,
        block_q=bq,
        block_k=bk,
        groups=h // kv_heads,
        backend=resolve_backend(backend),
        interpret=interpret,
    )
    if kind == "softmax":
        scale_bt = jnp.full((b, t), 1.0 / math.sqrt(d), jnp.float32)
        n_bt = jnp.zeros((b, t), jnp.float32)
    else:  # N per row (an XLA reduction, fused with the compare: no [B, T, S] tensor is stored)
        n_bt = jnp.sum(visibility(b, t, s, mask=mask, segment_ids=segment_ids, causal=causal), -1)
        n_bt = n_bt.astype(jnp.float32)
        scale_bt = softplus_scale(n_bt, d)
        q, k = l2_normalize(q).astype(q.dtype), l2_normalize(k).astype(k.dtype)
    segs = split_segment_ids(segment_ids, t, s)
    q_seg, kv_seg = segs if segs is not None else (jnp.zeros((b, t), jnp.int32), jnp.zeros((b, s), jnp.int32))
    rows = lambda x: pad_to(x.astype(jnp.float32), 1, t_pad)[:, :, None]  # [B, T_pad, 1]
    d_pad = feature_size(d, spec.backend)  # zero features change no dot product
    heads_first = lambda x, size: pad_to(
        pad_to(x.transpose(0, 2, 1, 3), 2, size), 3, d_pad
    )  # [B, H, N_pad, D_pad]
    out = _flash(
        spec,
        heads_first(q, t_pad),
        heads_first(k, s_pad),
        heads_first(v, s_pad),
        rows(scale_bt),
        rows(n_bt),
        pad_to(q_seg.astype(jnp.int32), 1, t_pad)[:, :, None],
        pad_to(kv_seg.astype(jnp.int32), 1, s_pad)[:, None, :],
        None if mask is None else pad_to(pad_to(mask.astype(jnp.int8), 1, t_pad), 2, s_pad),
    )
    return out[:, :, :t, :d].transpose(0, 2, 1, 3)
