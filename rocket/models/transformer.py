"""The dense decoder-only baseline (Llama-style): RoPE, RMSNorm pre-norm, GQA, SwiGLU.

  h_0 = E[tokens]
  h_l = h_{l-1} + Attn(RMSNorm(h_{l-1}))          (causal, segment-aware, GQA, RoPE)
  h_l = h_l + SwiGLU(RMSNorm(h_l))
  logits = RMSNorm(h_L) E^T   (tied)   or   RMSNorm(h_L) W_out   (untied), float32

Family options (`model.arch`: Llama-3 RoPE scaling, sliding window, q/k/v biases, q/k norms, Gemma's
1 + w norms, sqrt(D) embedding scale and GeGLU) are local choices of these layers.

Block kinds come from the config: `mod.pattern` makes layers Mixture-of-Depths blocks
(`rocket.models.mod.MoDBlock`, wrapping `Block`), and `mor.sharing` turns the body into a
Mixture-of-Recursions stack of shared `Block`s (`rocket.models.mor.RecursiveStack`). Their router
losses and statistics are returned in `aux["aux_losses"]` / `aux["metrics"]`. `scan_layers` loops
the body with `nn.scan` (dense layers, MoD periods, MoR shared blocks: `rocket.models.scan`).

Signature shared by every rocket model (docs/architecture.md, "The model call"):

  model.apply(params, tokens[B, T], positions[B, T], *, cache=None, segment_ids=None,
              block_mask=None, routing="topk", deterministic=True) -> (logits[B, T, V], aux)

`aux["hidden"]` is the final normalised hidden state [B, T, D] (what the LM head reads; used by
contrastive search and drafters). With a cache, `aux["new_kv"]` is the block's `KVBlock`: the cache
is read, never written; commit with `rocket.layers.cache.commit_block`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.config import ModelConfig
from rocket.layers import Attention, RMSNorm, make_block_mask
from rocket.layers.cache import Cache, KVBlock, LayerCache
from rocket.layers.init import kernel_init
from rocket.models.kinds import attention_kinds, make_embed, make_mlp
from rocket.models.mor import RecursiveStack
from rocket.models.scan import BLOCK_AXES, mod_layers, scan_over_layers
from rocket.routing import merge_router_extras

_REMAT_POLICIES = {  # every `model.remat` choice but "none" (tests/test_layering.py checks the match)
    "full": None,  # save nothing, recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Block(nn.Module):
    """One pre-norm decoder block: (h[B, T, D], ...) -> (h[B, T, D], (k, v)[B, T, H_kv, D_h])."""

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self,
        h_btd: jax.Array,
        positions_bt: jax.Array,
        block_mask_btt: jax.Array,
        cache: LayerCache | None,
        shared_kv: tuple[jax.Array, jax.Array, jax.Array] | None = None,  # see Attention (MoR KV sharing)
        causal_segment_ids_bt: jax.Array | None = None,  # see Attention: only when the mask is exact
    ):
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        norm = lambda name: RMSNorm(cfg.norm_eps, dtype, pdtype, cfg.arch.norm_offset, name=name)
        attn = Attention(
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.resolved_head_dim,
            cfg.rope_theta,
            n_layers=cfg.n_layers,
            impl=cfg.attention.impl,
            dtype=dtype,
            param_dtype=pdtype,
            arch=cfg.arch,
            norm_eps=cfg.norm_eps,
            name="attn",
            **attention_kinds(cfg),
        )
        y_btd, kv = attn(
            norm("attn_norm")(h_btd), positions_bt, block_mask_btt, cache, shared_kv, causal_segment_ids_bt
        )
        h_btd = h_btd + y_btd.astype(h_btd.dtype)
        h_btd = h_btd + make_mlp(cfg, name="mlp")(norm("mlp_norm")(h_btd)).astype(h_btd.dtype)
        h_btd = nn.with_logical_constraint(
            h_btd, ("activation_batch", "activation_length", "activation_embed")
        )
        return h_btd, kv


def _block_class(cfg: ModelConfig) -> type[nn.Module]:
    """`Block`, rematerialised per `cfg.remat` (a MoD layer remats the block it wraps)."""
    if cfg.remat == "none":
        return Block
    return nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)


class Transformer(nn.Module):
    """Decoder-only LM. See the module docstring for the math and the call signature."""

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        *,
        cache: Cache | None = None,
        segment_ids: jax.Array | None = None,
        block_mask: jax.Array | None = None,
        routing: str = "topk",
        deterministic: bool = True,
    ) -> tuple[jax.Array, dict[str, Any]]:
        del deterministic  # the dense baseline has no dropout; the argument is part of the interface
        if routing not in ("topk", "causal"):
            raise ValueError(f"routing must be 'topk' or 'causal', got {routing!r}")
        cfg = self.cfg
        b, t = tokens.shape
        if positions.shape != tokens.shape:
            raise ValueError(f"positions {positions.shape} must have the shape of tokens {tokens.shape}")
        if t > cfg.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds model.max_seq_len={cfg.max_seq_len}")
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        embed = make_embed(cfg, name="embed")
        h_btd = embed(tokens, segment_ids)
        h_btd = nn.with_logical_constraint(
            h_btd, ("activation_batch", "activation_length", "activation_embed")
        )
        mask_btt = make_block_mask(segment_ids, block_mask, t, b)
        # Without a cache or a user mask, mask_btt is exactly causal AND same-segment: blocks that
        # attend over the unchanged mask pass these ids on, so fused kernels skip the dense mask.
        causal_ids_bt = None
        if cache is None and block_mask is None:
            causal_ids_bt = jnp.zeros((b, t), jnp.int32) if segment_ids is None else segment_ids

        block_cls = _block_class(cfg)
        routed = cfg.mor.enabled or any(c is not None for c in cfg.layer_capacities)
        if cfg.scan_layers and not routed:
            stack = scan_over_layers(block_cls, cfg.n_layers, BLOCK_AXES)(cfg, name="layers")
            h_btd, (k_lbthd, v_lbthd) = stack(
                h_btd, positions, mask_btt, None if cache is None else cache.layers(), None, causal_ids_bt
            )
            valid_lbt, extras = None, []
        else:  # by layer kind (MoD / MoR: rocket.models.scan, rocket.models.mor), scanned or not
            h_btd, kvs, valids, extras = self._layers(
                h_btd, positions, mask_btt, cache, segment_ids, routing, causal_ids_bt
            )
            if cache is not None:
                k_lbthd, v_lbthd = jnp.stack([k for k, _ in kvs]), jnp.stack([v for _, v in kvs])
                valid_lbt = (
                    None
                    if all(v is None for v in valids)
                    else jnp.stack([jnp.ones((b, t), bool) if v is None else v for v in valids])
                )

        h_btd = RMSNorm(cfg.norm_eps, dtype, pdtype, cfg.arch.norm_offset, name="final_norm")(h_btd)
        if cfg.tie_embeddings:
            logits_btv = embed.attend(h_btd, segment_ids)
        else:
            w_out_dv = self.param(
                "unembed", kernel_init(("embed", "vocab")), (cfg.d_model, cfg.vocab_size), pdtype
            )
            logits_btv = jnp.einsum(
                "btd,dv->btv", h_btd, w_out_dv.astype(dtype), preferred_element_type=jnp.float32
            )
        logits_btv = nn.with_logical_constraint(
            logits_btv, ("activation_batch", "activation_length", "activation_vocab")
        )
        aux: dict[str, Any] = {"hidden": h_btd}
        aux.update(merge_router_extras(extras))
        if cache is not None:
            aux["new_kv"] = KVBlock(
                k=k_lbthd, v=v_lbthd, positions=positions.astype(jnp.int32), valid=valid_lbt
            )
        return logits_btv, aux

    def _layers(self, h_btd, positions_bt, mask_btt, cache, segment_ids_bt, routing, causal_ids_bt):
        """The decoder body -> (h, kv per cache layer, valid[B, T] | None per cache layer, extras).

        Plain layers get `causal_ids_bt`, and MoR passes it on to the blocks whose mask stays causal
        AND same-segment (see `RecursiveStack`); MoD's routed blocks keep the dense mask."""
        cfg = self.cfg
        b, t = positions_bt.shape
        valid_bt = jnp.ones((b, t), bool) if segment_ids_bt is None else segment_ids_bt != 0
        block_cls = _block_class(cfg)
        if cfg.mor.enabled:
            stack = RecursiveStack(cfg, block_cls, routing, name="mor")
            h_btd, kvs, valids, extras = stack(h_btd, positions_bt, mask_btt, cache, valid_bt, causal_ids_bt)
            return h_btd, kvs, valids, [("mor", extras)]
        return mod_layers(
            cfg, block_cls, routing, h_btd, positions_bt, mask_btt, cache, valid_bt, causal_ids_bt
        )
