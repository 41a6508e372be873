"""What the decoding engine needs from a model: the `DecodableModel` protocol and its `DecodeSpec`.

Any flax module with the rocket model signature decodes, as target or draft (`rocket.models.Transformer`
and the table toys of the tests alike):

    logits[B, T, V], aux = module.apply(variables, tokens[B, T], positions[B, T], cache=Cache,
                                        block_mask=bool[B, T, T] | None, routing="causal", **kwargs)
    aux["new_kv"]: KVBlock   the block's K/V, for the caller to commit (the cache is never written)
    aux["hidden"]: [B, T, D] the final normed hidden state (contrastive search reads it)

plus a `cfg` with the attributes of `DecodableConfig`. The engine reads `cfg` in exactly one place,
`DecodeSpec.of`; everything else (`ModelStep`, the methods, the tools) goes through the spec.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from rocket.layers.cache import Cache, init_cache


class DecodableConfig(Protocol):
    """The attributes of a model's `cfg` that decoding reads (all of them exist on `ModelConfig`)."""

    @property
    def vocab_size(self) -> int: ...  # V, the logits' last axis

    @property
    def max_seq_len(self) -> int: ...  # the longest position + 1 the model accepts

    @property
    def cache_layers(self) -> int: ...  # L, the K/V layers of a decoding cache

    @property
    def n_kv_heads(self) -> int: ...  # H_kv

    @property
    def resolved_head_dim(self) -> int: ...  # D_h

    @property
    def dtype(self) -> str: ...  # compute dtype, the cache's dtype (e.g. "float32", "bfloat16")


class DecodableModel(Protocol):
    """A flax module the engine can decode with (see the module docstring for the call contract)."""

    @property
    def cfg(self) -> DecodableConfig: ...

    def apply(
        self,
        variables: Any,
        tokens_bt: jax.Array,
        positions_bt: jax.Array,
        *,
        cache: Cache | None = None,
        block_mask: jax.Array | None = None,
        routing: str = "causal",
        **kwargs: Any,
    ) -> tuple[jax.Array, dict[str, Any]]: ...


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """A model's decoding-relevant configuration, read once from its `cfg`."""

    vocab_size: int
    max_seq_len: int
    cache_layers: int
    n_kv_heads: int
    head_dim: int
    dtype: jnp.dtype

    @classmethod
    def of(cls, model: DecodableModel) -> DecodeSpec:
        cfg = model.cfg
        return cls(
            vocab_size=cfg.vocab_size,
            max_seq_len=cfg.max_seq_len,
            cache_layers=cfg.cache_layers,
            n_kv_heads=cfg.n_kv_heads,
            head_dim=cfg.resolved_head_dim,
            dtype=jnp.dtype(cfg.dtype),
        )

    def new_cache(self, batch: int, max_len: int) -> Cache:
        """An empty cache of this model's K/V layers with `max_len` slots per row."""
        return init_cache(self.cache_layers, batch, max_len, self.n_kv_heads, self.head_dim, self.dtype)
