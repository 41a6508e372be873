"""Softplus attention with the length scale (LSSA) and training-free re-weighting (LSSAR).

Gao and Spratling, "Softplus Attention with Re-weighting Boosts Length Extrapolation in Large
Language Models", arXiv 2501.13428. Per head, with M[b, t, s] the 0/1 visibility mask (causal,
same segment, committed cache slots, user block mask) and N = sum_s M the visible keys of the row
(cache + block, within the document):

  q̂ = q / ||q||,  k̂ = k / ||k||                       (L2 over D_h, after RoPE; no 1/sqrt(D_h))
  S = log(D_h) log(max(N, 1)) q̂ · k̂                   (S = 0 on a row with one key: log 1 = 0)
  A = softplus(S) * M                                  (the mask multiplies: never -inf * 0 = NaN)
  Ā = A / (sum_s A + 1e-6)                             LSSA
  LSSAR with power p:
    O = 0 if N <= 3 else 1 (offset; `offset=False` sets O = 0 everywhere)
    R = relu(N Ā - O) * M
    W = (R / max(max_s R, 1e-30)) ** p                 (divided by the row max BEFORE the power)
    Â = W / (sum_s W + 1e-6)                           (a row with nothing above uniform -> 0, not NaN)
  out = weights @ v

All statistics in float32 (the numeric contract shared with the Pallas kernels).
With p = 1 and no offset Â = Ā up to the 1e-6 epsilons; the offset (subtract the uniform level 1/N
after scaling by N) is what sharpens. p can be switched on at inference for a model trained with
plain LSSA (the paper's "fine-tuning-free" use): it changes no parameters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_L2_EPS = 1e-12
_L1_EPS = 1e-6
_MAX_EPS = 1e-30


def _l2_normalise(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + _L2_EPS)


def softplus_weights(
    qk_bkgts: jax.Array,
    mask_bts: jax.Array,
    head_dim: int,
    power: float | None = None,
    *,
    offset: bool = True,
) -> jax.Array:
    """Attention weights from cosine scores q̂·k̂ [B, K, G, T, S] and mask [B, T, S] -> f32 [B, K, G, T, S].

    `power=None` gives LSSA (Ā); a power p > 0 gives LSSAR (Â). See the module docstring.
    """
    if power is not None and power <= 0:
        raise ValueError(f"the re-weighting power must be > 0 (or None for no re-weighting), got {power}")
    m = mask_bts[:, None, None].astype(jnp.float32)  # [B, 1, 1, T, S]
    n_bt = jnp.sum(mask_bts, axis=-1).astype(jnp.float32)  # [B, T] visible keys per row
    n = n_bt[:, None, None, :, None]  # [B, 1, 1, T, 1]
    scale = math.log(head_dim) * jnp.log(jnp.maximum(n, 1.0))
    a = jax.nn.softplus(scale * qk_bkgts.astype(jnp.float32)) * m
    a_bar = a / (jnp.sum(a, axis=-1, keepdims=True) + _L1_EPS)
    if power is None:
        return a_bar
    o = jnp.where(n <= 3, 0.0, 1.0) if offset else 0.0
    r = jax.nn.relu(n * a_bar - o) * m
    r = r / jnp.maximum(jnp.max(r, axis=-1, keepdims=True), _MAX_EPS)
    pos = r > 0
    w = jnp.where(pos, jnp.where(pos, r, 1.0) ** jnp.float32(power), 0.0)  # 0 ** p without NaN grads
    return w / (jnp.sum(w, axis=-1, keepdims=True) + _L1_EPS)


def softplus_attention(
    q_bthd: jax.Array,
    k_bskd: jax.Array,
    v_bskd: jax.Array,
    mask_bts: jax.Array,
    *,
    power: float | None = None,
    offset: bool = True,
) -> jax.Array:
    """LSSA (power=None) or LSSAR attention with GQA -> [B, T, H, D_h] in q's dtype.

    q[B, T, H, D_h], k/v[B, S, H_kv, D_h] (query head h reads kv head h // (H / H_kv)), mask bool[B, T, S].
    """
    b, t, h, d = q_bthd.shape
    kv_heads = k_bskd.shape[2]
    q_btkgd = _l2_normalise(q_bthd).reshape(b, t, kv_heads, h // kv_heads, d)
    cos_bkgts = jnp.einsum("btkgd,bskd->bkgts", q_btkgd, _l2_normalise(k_bskd))
    probs_bkgts = softplus_weights(cos_bkgts, mask_bts, d, power, offset=offset)
    out_btkgd = jnp.einsum(
        "bkgts,bskd->btkgd", probs_bkgts, v_bskd.astype(jnp.float32), preferred_element_type=jnp.float32
    )
    return out_btkgd.reshape(b, t, h, d).astype(q_bthd.dtype)
