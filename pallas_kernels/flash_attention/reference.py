"""Plain-jnp reference attention (softmax, and softplus LSSA / LSSAR), the ground truth the kernels
must match. Formulas: /work/notes/CONTRACTS.md, shared with rocket/layers (impl="xla").

Shapes: q [B, T, H, D], k and v [B, S, H_kv, D] with H = G * H_kv (grouped-query attention: query
head h reads kv head h // G). Visibility M[b, t, s] is the AND of the optional parts

  * causal: s <= t + (S - T)  (queries are the last T of the S keys' positions, bottom-right aligned),
  * segment ids: q_seg[b, t] == kv_seg[b, s] (documents packed into one row),
  * a user boolean mask [B, T, S].

Softmax: softmax(q k^T / sqrt(D), masked scores = -1e30), so a row with nothing visible is a uniform
average of all S values (defined, never NaN), as rocket.layers.attention does.

Softplus (Gao & Spratling, arXiv 2501.13428), per row with N = sum_s M visible keys:
  q^ = q / sqrt(|q|^2 + 1e-12), k^ likewise;  S = log(D) log(max(N, 1)) q^ . k^   (no 1/sqrt(D))
  A = softplus(S) * M;  A_bar = A / (sum_s A + 1e-6)                              (LSSA)
  LSSAR (power p > 0): O = 0 if N <= 3 else 1;  R = relu(N A_bar - O) * M;
  W = (R / max(max_s R, 1e-30))^p;  A_hat = W / (sum_s W + 1e-6)                  (all-zero row -> 0)
Output = weights @ v with float32 accumulation, cast to q's dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KINDS = ("softmax", "softplus")
L1_EPS = 1e-6  # the epsilon of both L1 normalisations
NORM_EPS = 1e-12  # inside the L2 norm of q and k
MASKED_SCORE = -1e30  # finite: a fully masked softmax row is a uniform average, never NaN

SegmentIds = jax.Array | tuple[jax.Array, jax.Array]


def split_segment_ids(segment_ids: SegmentIds | None, t: int, s: int) -> tuple[jax.Array, jax.Array] | None:
    """(q_seg [B, T], kv_seg [B, S]) from one [B, T] array (self-attention, T == S) or a pair."""
    if segment_ids is None:
        return None
    if isinstance(segment_ids, tuple):
        q_seg, kv_seg = segment_ids
    else:
        if t != s:
            raise ValueError(f"one segment_ids array needs T == S, got T={t}, S={s}; pass (q_seg, kv_seg)")
        q_seg = kv_seg = segment_ids
    if q_seg.shape[1] != t or kv_seg.shape[1] != s:
        raise ValueError(f"segment ids shapes {q_seg.shape}, {kv_seg.shape} do not match T={t}, S={s}")
    return q_seg, kv_seg


def visibility(
    batch: int,
    t: int,
    s: int,
    *,
    mask: jax.Array | None = None,
    segment_ids: SegmentIds | None = None,
    causal: bool = False,
) -> jax.Array:
    """bool [B, T, S]: which keys each query sees (see module docstring)."""
    vis = jnp.ones((batch, t, s), bool)
    if causal:
        vis &= (jnp.arange(s)[None, :] <= jnp.arange(t)[:, None] + (s - t))[None]
    segs = split_segment_ids(segment_ids, t, s)
    if segs is not None:
        vis &= segs[0][:, :, None] == segs[1][:, None, :]
    if mask is not None:
        if mask.shape != (batch, t, s):
            raise ValueError(f"mask shape {mask.shape} != (B, T, S) = {(batch, t, s)}")
        vis &= mask.astype(bool)
    return vis


def l2_normalize(x: jax.Array) -> jax.Array:
    """x / sqrt(sum(x^2) + 1e-12) over the last axis, in float32."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + NORM_EPS)


def softplus_scale(n_visible: jax.Array, head_dim: int) -> jax.Array:
    """The LSSA length scale log(D) * log(max(N, 1)) of each row (0 on a row that sees one key)."""
    return jnp.log(float(head_dim)) * jnp.log(jnp.maximum(n_visible.astype(jnp.float32), 1.0))


def softplus_weights(
    scores: jax.Array, vis: jax.Array, n_visible: jax.Array, power: float | None
) -> jax.Array:
    """LSSA (power None or 0) or LSSAR weights [..., S] from scaled scores S and the mask [..., S];
    `n_visible` [..., 1] is N per row. See the module docstring."""
    a = jax.nn.softplus(scores) * vis
    a_bar = a / (jnp.sum(a, axis=-1, keepdims=True) + L1_EPS)
    if not power:
        return a_bar
    offset = jnp.where(n_visible <= 3, 0.0, 1.0)
    r = jax.nn.relu(n_visible * a_bar - offset) * vis
    r_tilde = r / jnp.maximum(jnp.max(r, axis=-1, keepdims=True), 1e-30)
    positive = r_tilde > 0
    w = jnp.where(positive, jnp.exp(power * jnp.log(jnp.where(positive, r_tilde, 1.0))), 0.0)
    return w / (jnp.sum(w, axis=-1, keepdims=True) + L1_EPS)


def attention_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    kind: str = "softmax",
    mask: jax.Array | None = None,
    segment_ids: SegmentIds | None = None,
    causal: bool = False,
    power: float | None = None,
) -> jax.Array:
    """Masked grouped-query attention of the given kind -> [B, T, H, D] in q's dtype."""
    if kind not in KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; available: {KINDS}")
    b, t, h, d = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    if h % kv_heads:
        raise ValueError(f"{h} query heads are not divisible by {kv_heads} key/value heads")
    vis_bts = visibility(b, t, s, mask=mask, segment_ids=segment_ids, causal=causal)
    vis_b11ts = vis_bts[:, None, None]
    q_btkgd = q.reshape(b, t, kv_heads, h // kv_heads, d)
    if kind == "softmax":
        scores = jnp.einsum("btkgd,bskd->bkgts", q_btkgd, k, preferred_element_type=jnp.float32) * d**-0.5
        weights = jax.nn.softmax(jnp.where(vis_b11ts, scores, MASKED_SCORE), axis=-1)
    else:
        n_bt1 = jnp.sum(vis_bts, axis=-1, keepdims=True).astype(jnp.float32)
        cos = jnp.einsum("btkgd,bskd->bkgts", l2_normalize(q_btkgd), l2_normalize(k))
        scores = softplus_scale(n_bt1, d)[:, None, None] * cos
        weights = softplus_weights(scores, vis_b11ts, n_bt1[:, None, None], power)
    out = jnp.einsum("bkgts,bskd->btkgd", weights, v.astype(jnp.float32))
    return out.reshape(b, t, h, d).astype(q.dtype)
