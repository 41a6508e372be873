"""Layer kinds from `ModelConfig`: which attention, projections, MLP and embedding a model builds.

Every decoder (the dense Transformer, MoD/MoR blocks) builds its layers through these factories,
so `projection.kind="pattention"`, `attention.kind="softplus"` and `embedding.kind="lexinvariant"`
compose with each other and with the block kinds without new model classes.

Projection kinds are a registry (`rocket.config.PROJECTION_KINDS`): each name maps to a
`ProjectionKind` that builds attention's four projections and the FFN. A user project registers
its own (`docs/extending.md`, "A new layer kind") and selects it with `projection.kind`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from rocket.config import PROJECTION_KINDS, ModelConfig
from rocket.layers.attention import LinearFactory
from rocket.layers.embed import Embed
from rocket.layers.lexinvariant import LexinvariantEmbed
from rocket.layers.mlp import SwiGLU
from rocket.layers.pattention import Pattention, PattentionSpec


@dataclasses.dataclass(frozen=True)
class ProjectionKind:
    """What a projection kind builds.

    attention: cfg -> the `LinearFactory` of attention's Q/K/V/output projections, or None for
      attention's own dense weight matrices.
    ffn: (cfg, name) -> the FFN module h[B, T, D] -> [B, T, D].
    """

    attention: Callable[[ModelConfig], LinearFactory | None]
    ffn: Callable[[ModelConfig, str], nn.Module]


def _dtypes(cfg: ModelConfig) -> tuple[jnp.dtype, jnp.dtype]:
    return jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)


def pattention_spec(cfg: ModelConfig, which: str) -> PattentionSpec:
    """The Pattention of the attention projections (`which="attn"`) or of the FFN ("ffn")."""
    if which == "attn":
        n, n_scale = cfg.resolved_n_param_tokens, cfg.projection.scale_tokens
    elif which == "ffn":
        n, n_scale = cfg.resolved_n_param_tokens_ffn, cfg.projection.scale_tokens_ffn
    else:
        raise ValueError(f"which must be 'attn' or 'ffn', got {which!r}")
    return PattentionSpec(n, n if n_scale is None else n_scale, cfg.projection.norm, cfg.attention.impl)


def _pattention_linear(
    spec: PattentionSpec,
    n_layers: int,
    dtypes: tuple[Any, Any],
    features: int,
    axes: tuple[str, str],
    name: str,
) -> nn.Module:
    return Pattention(spec, features, n_layers, axes, *dtypes, name=name)


def _pattention_attention(cfg: ModelConfig) -> LinearFactory:
    return functools.partial(_pattention_linear, pattention_spec(cfg, "attn"), cfg.n_layers, _dtypes(cfg))


def _pattention_ffn(cfg: ModelConfig, name: str) -> nn.Module:
    """One FFN Pattention D -> D with n_ffn parameter tokens (TokenFormer)."""
    spec = pattention_spec(cfg, "ffn")
    return Pattention(spec, cfg.d_model, cfg.n_layers, ("embed", "embed"), *_dtypes(cfg), name=name)


def _swiglu_ffn(cfg: ModelConfig, name: str) -> nn.Module:
    dtype, pdtype = _dtypes(cfg)
    return SwiGLU(
        cfg.resolved_d_ff,
        n_layers=cfg.n_layers,
        dtype=dtype,
        param_dtype=pdtype,
        activation=cfg.arch.mlp_activation,
        name=name,
    )


PROJECTION_KINDS.register("dense", ProjectionKind(attention=lambda cfg: None, ffn=_swiglu_ffn))
PROJECTION_KINDS.register("pattention", ProjectionKind(attention=_pattention_attention, ffn=_pattention_ffn))


def attention_kinds(cfg: ModelConfig) -> dict[str, Any]:
    """Keyword arguments of `rocket.layers.Attention` that select its kind and projections."""
    projection: ProjectionKind = PROJECTION_KINDS.get(cfg.projection.kind)
    return {
        "kind": cfg.attention.kind,
        "power": cfg.attention.softplus_power,
        "projection": projection.attention(cfg),
    }


def make_mlp(cfg: ModelConfig, name: str = "mlp") -> nn.Module:
    """The FFN of the configured projection kind (SwiGLU for "dense")."""
    projection: ProjectionKind = PROJECTION_KINDS.get(cfg.projection.kind)
    return projection.ffn(cfg, name)


def make_embed(cfg: ModelConfig, name: str = "embed") -> nn.Module:
    """The token embedding (and tied readout): learned table or lexinvariant per-sequence matrix."""
    dtype, pdtype = _dtypes(cfg)
    if cfg.embedding.kind == "lexinvariant":
        return LexinvariantEmbed(
            cfg.vocab_size, cfg.d_model, cfg.embedding.learned_prob, cfg.init_std, dtype, pdtype, name=name
        )
    scale = cfg.d_model**0.5 if cfg.arch.embed_scale else 1.0
    return Embed(cfg.vocab_size, cfg.d_model, cfg.init_std, dtype, pdtype, scale, name=name)
