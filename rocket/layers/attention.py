"""Grouped-query causal self-attention with RoPE and an optional KV cache.

`attention_fn` is the single entry point every attention variant goes through. Kinds are looked up
in the `ATTENTION_KINDS` registry (declared in `rocket.config.kinds`; a user project registers its
own, `docs/extending.md`), each an `AttentionFn` (q, k, v, mask, *, power) -> out:

  kind="softmax":  softmax(q k^T / sqrt(D_h) + mask) v,   q[B, T, H, D_h], k/v[B, S, H_kv, D_h], mask bool[B, T, S]
  kind="softplus": LSSA / LSSAR (`rocket.layers.softplus`; `power` = the re-weighting power or None)

with H = G * H_kv (query heads grouped over shared K/V heads; Ainslie et al., 2023, arXiv
2305.13245). Scores and softmax are float32. `impl="xla"` is the plain-jnp reference; `impl="pallas"`
runs fused kernels behind the same signature for the built-in kinds (cuDNN or pallas_kernels; see
rocket.layers.kernels; a registered kind without a kernel runs its jnp function), and "auto" picks
pallas on GPU/TPU.

The `Attention` module attends the in-flight block to itself (through `block_mask`, causal and
segment-aware by default) and to the committed cache slots it may see (`LayerCache.visible`).
It never mutates the cache: it returns the block's own K/V for the caller to commit.

Family options (`arch`, a `rocket.config.ArchConfig`): Llama-3 RoPE scaling, a sliding window
(a query at position i sees keys at i - W < j <= i: Mistral), q/k/v biases (Qwen2) and an RMSNorm
over each head's q and k before RoPE (Qwen3).

Opt-in inspection: when the "intermediates" collection is mutable (`model.apply(...,
mutable=["intermediates"])`), every layer also sows `attn_probs` [B, H, T, S] float32, computed by
`attention_probs` (the explicit softmax, whatever `impl` runs the forward).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.config.arch import ArchConfig
from rocket.config.kinds import ATTENTION_KINDS
from rocket.layers.cache import LayerCache
from rocket.layers.init import kernel_init
from rocket.layers.kernels import (
    FUSED_ATTENTION_KINDS,
    pallas_attention,
    pallas_cached_attention,
    resolve_impl,
)
from rocket.layers.norms import RMSNorm
from rocket.layers.rope import apply_rope
from rocket.layers.softplus import softplus_attention

# (q[B, T, H, D_h], k[B, S, H_kv, D_h], v[B, S, H_kv, D_h], mask bool[B, T, S], *, power) -> [B, T, H, D_h]
AttentionFn = Callable[..., jax.Array]
# (features_out, (input axis, output axis) logical names, module name) -> a module [..., D_in] -> [..., features_out]
LinearFactory = Callable[[int, tuple[str, str], str], nn.Module]
_NEG_INF = -1e30  # finite, so a row with nothing visible gives a uniform average, never NaN
# causal query blocks of the XLA path (`causal_query_blocks`): queries per block, and at most this
# many blocks (each block is a separate pair of matmuls in the program: compile time grows with n).
# On CPU (f32, fwd+bwd of the dense baseline) 64 beat 128 at T = 128 and 256, and 4 blocks of 256
# beat 8 of 128 at T = 1024 (`experiments.bench_peers`).
CAUSAL_QUERY_BLOCK = 64
MAX_QUERY_BLOCKS = 4
_KEY_TRUNCATION_EXACT_KINDS = ("softmax", "softplus")  # masked keys contribute exactly nothing


def attention_fn(
    q_bthd: jax.Array,
    k_bskd: jax.Array,
    v_bskd: jax.Array,
    mask_bts: jax.Array,
    *,
    kind: str = "softmax",
    impl: str = "xla",
    power: float | None = None,
    causal_segment_ids_bt: jax.Array | None = None,
) -> jax.Array:
    """Masked grouped-query attention -> [B, T, H, D_h] in q's dtype. See module docstring.

    `causal_segment_ids_bt` (int [B, T]; optional) states that `mask_bts` is exactly causal AND
    same-segment for these ids (`make_block_mask(ids, None, T, B)`, no cache): impl "pallas" then
    runs the flash kernel with causal tile skipping and no dense mask; "xla" runs the built-in kinds
    over causal query blocks (`causal_query_blocks`: the keys after a block are never computed).
    """
    fn: AttentionFn = ATTENTION_KINDS.get(kind)
    if resolve_impl(impl) == "pallas" and kind in FUSED_ATTENTION_KINDS:
        return pallas_attention(
            q_bthd,
            k_bskd,
            v_bskd,
            mask_bts,
            kind=kind,
            power=power,
            causal_segment_ids_bt=causal_segment_ids_bt,
        )
    if q_bthd.shape[2] % k_bskd.shape[2]:
        raise ValueError(
            f"{q_bthd.shape[2]} query heads are not divisible by {k_bskd.shape[2]} key/value heads"
        )
    if causal_segment_ids_bt is not None and kind in _KEY_TRUNCATION_EXACT_KINDS:
        return causal_query_blocks(fn, q_bthd, k_bskd, v_bskd, mask_bts, power=power)
    return fn(q_bthd, k_bskd, v_bskd, mask_bts, power=power)


def causal_query_blocks(
    fn: AttentionFn,
    q_bthd: jax.Array,
    k_bthd: jax.Array,
    v_bthd: jax.Array,
    mask_btt: jax.Array,
    *,
    power: float | None = None,
    block: int | None = None,
) -> jax.Array:
    """`fn` over a causal mask, one block of queries [lo, hi) at a time against keys [0, hi) only.

    Exact for a kind whose masked keys contribute nothing (softmax: exp(-1e30 - max) = 0 in float32;
    softplus: A = softplus(S) * M and N counts visible keys): under a causal mask the keys at j >= hi
    are masked for every query of the block, so dropping them changes no output, only the float
    summation order. The n blocks of about T/n queries compute (n + 1) / 2n of the T x T scores and
    their backward (the XLA counterpart of a flash kernel's causal tile skipping). `block`: queries
    per block (default `CAUSAL_QUERY_BLOCK`), at most `MAX_QUERY_BLOCKS` blocks."""
    t = q_bthd.shape[1]
    n = max(1, min(t // (block or CAUSAL_QUERY_BLOCK), MAX_QUERY_BLOCKS))
    if n == 1:
        return fn(q_bthd, k_bthd, v_bthd, mask_btt, power=power)
    bounds = [t * i // n for i in range(n + 1)]
    outs = [
        fn(q_bthd[:, lo:hi], k_bthd[:, :hi], v_bthd[:, :hi], mask_btt[:, lo:hi, :hi], power=power)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return jnp.concatenate(outs, axis=1)


def softmax_attention(
    q_bthd: jax.Array,
    k_bskd: jax.Array,
    v_bskd: jax.Array,
    mask_bts: jax.Array,
    *,
    power: float | None = None,
) -> jax.Array:
    """softmax(q k^T / sqrt(D_h) + mask) v with grouped K/V heads; scores and softmax in float32."""
    if power is not None:
        raise ValueError("a re-weighting power applies to kind='softplus' only, got kind='softmax'")
    b, t, h, d = q_bthd.shape
    kv_heads = k_bskd.shape[2]
    # 1/sqrt(D_h) scales q[B, T, H, D_h] rather than the S/D_h-times larger scores where that is
    # exact (a power of two: D_h = 4^n), else the float32 scores: the same numbers either way.
    scale = d**-0.5
    q_scale, s_scale = (scale, 1.0) if math.log2(scale).is_integer() else (1.0, scale)
    q_bthd = q_bthd * jnp.asarray(q_scale, q_bthd.dtype) if q_scale != 1.0 else q_bthd
    if kv_heads == h:  # multi-head: plain 4-D contractions lay out better than a unit group axis
        scores_bhts = jnp.einsum("bthd,bshd->bhts", q_bthd, k_bskd, preferred_element_type=jnp.float32)
        scores_bhts = jnp.where(mask_bts[:, None], scores_bhts * s_scale, _NEG_INF)
        probs_bhts = jax.nn.softmax(scores_bhts, axis=-1)
        return jnp.einsum("bhts,bshd->bthd", probs_bhts.astype(v_bskd.dtype), v_bskd)
    q_btkgd = q_bthd.reshape(b, t, kv_heads, h // kv_heads, d)
    scores_bkgts = jnp.einsum("btkgd,bskd->bkgts", q_btkgd, k_bskd, preferred_element_type=jnp.float32)
    scores_bkgts = jnp.where(mask_bts[:, None, None], scores_bkgts * s_scale, _NEG_INF)
    probs_bkgts = jax.nn.softmax(scores_bkgts, axis=-1)
    out_btkgd = jnp.einsum("bkgts,bskd->btkgd", probs_bkgts.astype(v_bskd.dtype), v_bskd)
    return out_btkgd.reshape(b, t, h, d)


ATTENTION_KINDS.register("softmax", softmax_attention)
ATTENTION_KINDS.register("softplus", softplus_attention)


def attention_probs(q_bthd: jax.Array, k_bskd: jax.Array, mask_bts: jax.Array) -> jax.Array:
    """The softmax of `attention_fn` as probabilities [B, H, T, S] float32 (explicit, for inspection)."""
    b, t, h, d = q_bthd.shape
    kv_heads = k_bskd.shape[2]
    q_btkgd = q_bthd.reshape(b, t, kv_heads, h // kv_heads, d)
    scores_bkgts = jnp.einsum("btkgd,bskd->bkgts", q_btkgd, k_bskd, preferred_element_type=jnp.float32)
    scores_bkgts = jnp.where(mask_bts[:, None, None], scores_bkgts * d**-0.5, _NEG_INF)
    return jax.nn.softmax(scores_bkgts, axis=-1).reshape(b, h, t, -1)


def make_block_mask(
    segment_ids_bt: jax.Array | None, block_mask_btt: jax.Array | None, t: int, batch: int
) -> jax.Array:
    """bool[B, T, T] mask among the block's own tokens: causal AND same segment AND user mask.

    Segment ids (from packing) keep documents packed into one row from seeing each other; a user
    `block_mask` (e.g. a tree's ancestor-or-self mask) is intersected with the causal mask.
    """
    causal_tt = jnp.tril(jnp.ones((t, t), bool))
    mask = jnp.broadcast_to(causal_tt, (batch, t, t))
    if segment_ids_bt is not None:
        mask = mask & (segment_ids_bt[:, :, None] == segment_ids_bt[:, None, :])
    if block_mask_btt is not None:
        mask = mask & block_mask_btt.astype(bool)
    return mask


def window_mask(q_pos_bt: jax.Array, k_pos_bs: jax.Array, window: int | None) -> jax.Array | bool:
    """bool[B, T, S]: key position j is within the sliding window of query position i (i - j < W);
    True when there is no window."""
    if window is None:
        return True
    return (q_pos_bt[:, :, None] - k_pos_bs[:, None, :]) < window


class Attention(nn.Module):
    """Multi-head attention with GQA and RoPE: x[B, T, D] -> (y[B, T, D], (k, v) of the block).

    `kind`/`power` select the attention (a name in `ATTENTION_KINDS`; softplus takes a re-weighting
    power); `projection` builds the four projections instead of weight matrices (a `LinearFactory`:
    (features_out, logical axes, name) -> module x[..., D_in] -> [..., features_out], e.g. TokenFormer
    Pattentions; None = dense weights).
    """

    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float
    n_layers: int = 1
    impl: str = "xla"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    kind: str = "softmax"
    power: float | None = None
    projection: LinearFactory | None = None
    arch: ArchConfig = ArchConfig()
    norm_eps: float = 1e-6

    def _project_in(self, name: str, x_btd: jax.Array, heads: int, head_names: tuple[str, str]) -> jax.Array:
        """x[B, T, D] -> [B, T, heads, D_h] through a weight matrix or a Pattention."""
        b, t, d = x_btd.shape
        dh = self.head_dim
        if self.projection is not None:
            return self.projection(heads * dh, ("embed", head_names[0]), name)(x_btd).reshape(b, t, heads, dh)
        w = self.param(name, kernel_init(("embed", *head_names)), (d, heads, dh), self.param_dtype)
        y_bthd = jnp.einsum("btd,dhk->bthk", x_btd, w.astype(self.dtype))
        if self.arch.qkv_bias:
            init = nn.with_logical_partitioning(nn.initializers.zeros, head_names)
            y_bthd = y_bthd + self.param(f"{name}_bias", init, (heads, dh), self.param_dtype).astype(
                self.dtype
            )
        return y_bthd

    def _project_out(self, out_bthd: jax.Array, d: int) -> jax.Array:
        """[B, T, H, D_h] -> [B, T, D] through the output matrix or a Pattention."""
        b, t, h, dh = out_bthd.shape
        if self.projection is not None:
            return self.projection(d, ("heads", "embed"), "wo")(out_bthd.reshape(b, t, h * dh))
        wo = self.param(
            "wo",
            kernel_init(("heads", "head_dim", "embed"), in_axes=2, depth=self.n_layers),
            (h, dh, d),
            self.param_dtype,
        )
        return jnp.einsum("bthk,hkd->btd", out_bthd, wo.astype(self.dtype))

    @nn.compact
    def __call__(
        self,
        x_btd: jax.Array,
        positions_bt: jax.Array,
        block_mask_btt: jax.Array,
        cache: LayerCache | None = None,
        shared_kv: tuple[jax.Array, jax.Array, jax.Array] | None = None,
        causal_segment_ids_bt: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """`shared_kv` = (k, v, positions) [B, S, H_kv, D_h] x2 and [B, S] opts into attending to K/V
        that another application of this layer returned (MoR recursive KV sharing): no K/V projection
        runs, `block_mask_btt` is then [B, T, S] over those keys, and (k, v) is returned unchanged.

        `causal_segment_ids_bt`: optional int [B, T]; given only when `block_mask_btt` is exactly
        `make_block_mask(ids, None, T, B)` and there is no cache (see `attention_fn`)."""
        if cache is not None and causal_segment_ids_bt is not None:
            raise ValueError("causal_segment_ids_bt describes a cache-free block mask; got a cache too")
        if shared_kv is not None and causal_segment_ids_bt is not None:
            raise ValueError("causal_segment_ids_bt describes a square causal mask; got shared K/V too")
        d = x_btd.shape[-1]
        x = x_btd.astype(self.dtype)
        rope_at_read = cache is not None and cache.rope_at_read
        window, rope = self.arch.sliding_window, self.arch.rope
        if window is not None:  # the mask is no longer exactly causal
            causal_segment_ids_bt = None
        q_bthd = self._project_in("wq", x, self.n_heads, ("heads", "head_dim"))
        if shared_kv is None:
            k_bthd = self._project_in("wk", x, self.n_kv_heads, ("kv_heads", "head_dim"))
            v_bthd = self._project_in("wv", x, self.n_kv_heads, ("kv_heads", "head_dim"))
            k_positions_bt = positions_bt
        else:  # keys as returned: before RoPE iff the cache rotates at read time
            k_bthd, v_bthd, k_positions_bt = shared_kv
        if self.arch.qk_norm:
            qk_norm = lambda name: RMSNorm(
                self.norm_eps, self.dtype, self.param_dtype, self.arch.norm_offset, name=name
            )
            q_bthd = qk_norm("q_norm")(q_bthd)
            if shared_kv is None:
                k_bthd = qk_norm("k_norm")(k_bthd)
        q_bthd = apply_rope(q_bthd, positions_bt, self.rope_theta, rope)
        k_raw_bthd = k_bthd  # returned instead of the rotated keys for caches that rotate at read time
        if shared_kv is None or rope_at_read:
            k_bthd = apply_rope(k_bthd, k_positions_bt, self.rope_theta, rope)
        q_bthd = nn.with_logical_constraint(
            q_bthd, ("activation_batch", "activation_length", "activation_heads", "activation_kv")
        )

        same_len = k_bthd.shape[1] == q_bthd.shape[1]  # the split-K kernel's in-flight block is the queries'
        fused = resolve_impl(self.impl) == "pallas" and self.kind in FUSED_ATTENTION_KINDS
        if cache is not None and not rope_at_read and same_len and fused and window is None:
            out_bthd = pallas_cached_attention(  # split-K kernel over the cache
                q_bthd, cache, k_bthd, v_bthd, block_mask_btt, positions_bt, kind=self.kind, power=self.power
            )
        else:
            if cache is None:
                keys, values = k_bthd, v_bthd
                mask = block_mask_btt & window_mask(positions_bt, k_positions_bt, window)
            else:  # committed slots first, then the in-flight block
                cache_k = cache.k.astype(self.dtype)
                if rope_at_read:  # streaming: slot_pos are cache-relative positions
                    cache_k = apply_rope(cache_k, cache.slot_pos, self.rope_theta, rope)
                keys = jnp.concatenate([cache_k, k_bthd], axis=1)
                values = jnp.concatenate([cache.v.astype(self.dtype), v_bthd], axis=1)
                mask = jnp.concatenate([cache.visible(positions_bt), block_mask_btt], axis=2)
                k_pos_bs = jnp.concatenate([cache.slot_pos, k_positions_bt], axis=1)
                mask = mask & window_mask(positions_bt, k_pos_bs, window)
            out_bthd = attention_fn(
                q_bthd,
                keys,
                values,
                mask,
                kind=self.kind,
                impl=self.impl,
                power=self.power,
                causal_segment_ids_bt=causal_segment_ids_bt,
            )
            if self.is_mutable_collection("intermediates"):  # ssToken reads the probabilities
                self.sow("intermediates", "attn_probs", attention_probs(q_bthd, keys, mask))
        if rope_at_read:  # the cache stores keys before RoPE
            k_bthd = k_raw_bthd
        return self._project_out(out_bthd, d), (k_bthd, v_bthd)
