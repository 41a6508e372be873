"""Layer kinds from `ModelConfig`: which attention, projection, MLP and embedding a model builds.

Every decoder (the dense Transformer, MoD/MoR blocks) builds its layers through these factories,
so `projection="pattention"`, `attention="softplus"` and `embedding="lexinvariant"` compose with
each other and with the block kinds without new model classes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from rocket.config import ModelConfig
from rocket.layers.embed import Embed
from rocket.layers.lexinvariant import LexinvariantEmbed
from rocket.layers.mlp import SwiGLU
from rocket.layers.pattention import Pattention, PattentionSpec


def pattention_spec(cfg: ModelConfig, which: str) -> PattentionSpec | None:
    """The Pattention of the attention projections (`which="attn"`) or the FFN ("ffn"); None if dense."""
    if cfg.projection != "pattention":
        return None
    if which == "attn":
        n, n_scale = cfg.resolved_n_param_tokens, cfg.pattention_scale_tokens
    elif which == "ffn":
        n, n_scale = cfg.resolved_n_param_tokens_ffn, cfg.pattention_scale_tokens_ffn
    else:
        raise ValueError(f"which must be 'attn' or 'ffn', got {which!r}")
    return PattentionSpec(n, n if n_scale is None else n_scale, cfg.pattention_norm, cfg.attention_impl)


def attention_kinds(cfg: ModelConfig) -> dict[str, Any]:
    """Keyword arguments of `rocket.layers.Attention` that select its kind and projections."""
    return {"kind": cfg.attention, "power": cfg.softplus_power, "pattention": pattention_spec(cfg, "attn")}


def make_mlp(cfg: ModelConfig, name: str = "mlp") -> nn.Module:
    """SwiGLU (dense) or one FFN Pattention D -> D with n_ffn parameter tokens (TokenFormer)."""
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    spec = pattention_spec(cfg, "ffn")
    if spec is None:
        return SwiGLU(cfg.resolved_d_ff, n_layers=cfg.n_layers, dtype=dtype, param_dtype=pdtype, name=name)
    return Pattention(spec, cfg.d_model, cfg.n_layers, ("embed", "embed"), dtype, pdtype, name=name)


def make_embed(cfg: ModelConfig, name: str = "embed") -> nn.Module:
    """The token embedding (and tied readout): learned table or lexinvariant per-sequence matrix."""
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    if cfg.embedding == "lexinvariant":
        return LexinvariantEmbed(
            cfg.vocab_size, cfg.d_model, cfg.lexinvariant_learned_prob, cfg.init_std, dtype, pdtype, name=name
        )
    return Embed(cfg.vocab_size, cfg.d_model, cfg.init_std, dtype, pdtype, name=name)
