"""Pattention: a linear projection replaced by attention over learned parameter tokens (TokenFormer).

Wang et al., "TokenFormer: Rethinking Transformer Scaling with Tokenized Model Parameters",
arXiv 2410.23168; official code Haiyang-W/TokenFormer (`megatron/model/tokenformer.py`,
`Pattention.nonlinear_norm_func`; JAX: `tokenformer-tpu/MaxText/layers/tokenformer.py`).

For x[..., d_in], n key tokens K_P[n, d_in] and value tokens V_P[n, d_out]:

  A = x K_P^T                                   [..., n]   (float32 accumulate, no 1/sqrt(d) scale)
  Θ(A) =  "l2_norm_gelu":  gelu(A * tau / ||A||_2)            (official default)
          "gelu_l2_norm":  gelu(A) * tau / ||gelu(A)||_2
          "softmax":       softmax(A) * n                     (exp + L1 normalisation, the paper's form)
  out = Θ(A) V_P                                [..., d_out]

with norms over the parameter-token axis n per token, in float32 (+1e-12 inside the square root,
the numeric contract shared with the Pallas kernels), gelu the exact (erf) GeLU like torch's F.gelu,
and tau = sqrt(n_scale). n_scale is a *frozen constant*: the layer's n at creation (paper, PyTorch
code) or a chosen value (JAX code's `zoom_dim`). Growth (`rocket.models.tokenformer.grow`) appends
tokens with zero keys and keeps n_scale at the old n: a zero key scores A = 0, gelu(0) = 0 and it
adds nothing to ||A||, so under "l2_norm_gelu" and "gelu_l2_norm" the grown layer computes exactly
the same function whatever the new values are. (Under "softmax" exp(0) = 1 != 0: growth is not
function-preserving there.)
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.config.kinds import PATTENTION_NORMS as NORMS
from rocket.layers.kernels import pallas_pattention, resolve_impl

_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class PattentionSpec:
    """How a projection is tokenised: n parameter tokens, the frozen scale constant, the normaliser."""

    n: int
    n_scale: int
    norm: str = "l2_norm_gelu"
    impl: str = "xla"  # "xla" (this module's jnp math) | "pallas" (fused kernel) | "auto"

    def __post_init__(self):
        if self.n < 1 or self.n_scale < 1:
            raise ValueError(
                f"Pattention needs n >= 1 and n_scale >= 1, got n={self.n}, n_scale={self.n_scale}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"unknown Pattention norm {self.norm!r}; available: {NORMS}")


def pattention_weights(scores: jax.Array, n_scale: int, norm: str) -> jax.Array:
    """Θ(A) for scores A[..., n] -> float32 [..., n] (see the module docstring)."""
    a = scores.astype(jnp.float32)
    tau = jnp.sqrt(jnp.float32(n_scale))
    if norm == "l2_norm_gelu":
        return jax.nn.gelu(
            a * tau * jax.lax.rsqrt(jnp.sum(a * a, axis=-1, keepdims=True) + _EPS), approximate=False
        )
    if norm == "gelu_l2_norm":
        g = jax.nn.gelu(a, approximate=False)
        return g * tau * jax.lax.rsqrt(jnp.sum(g * g, axis=-1, keepdims=True) + _EPS)
    if norm == "softmax":
        return jax.nn.softmax(a, axis=-1) * a.shape[-1]
    raise ValueError(f"unknown Pattention norm {norm!r}; available: {NORMS}")


def pattention(x: jax.Array, keys_nd: jax.Array, values_ne: jax.Array, n_scale: int, norm: str) -> jax.Array:
    """Θ(x K_P^T) V_P: x[..., d_in], K_P[n, d_in], V_P[n, d_out] -> [..., d_out] in x's dtype."""
    scores = jnp.einsum("...d,nd->...n", x, keys_nd.astype(x.dtype), preferred_element_type=jnp.float32)
    theta = pattention_weights(scores, n_scale, norm)
    return jnp.einsum("...n,ne->...e", theta.astype(x.dtype), values_ne.astype(x.dtype))


class Pattention(nn.Module):
    """x[..., d_in] -> [..., d_out] through `spec.n` key/value parameter tokens.

    Init follows the official code: keys N(0, 0.02^2) ("normal"), values N(0, (2 / (L sqrt(d)))^2)
    ("wang_init", d = d_in). Params: "keys" [n, d_in], "values" [n, d_out] (the token axis is named
    "param_tokens"; growth appends rows along it).
    """

    spec: PattentionSpec
    d_out: int
    n_layers: int = 1
    names: tuple[str, str] = ("embed", "embed")  # logical axis names of d_in and d_out
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_in = x.shape[-1]
        value_std = 2.0 / (self.n_layers * d_in**0.5)
        keys_nd = self.param(
            "keys",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("param_tokens", self.names[0])),
            (self.spec.n, d_in),
            self.param_dtype,
        )
        values_ne = self.param(
            "values",
            nn.with_logical_partitioning(nn.initializers.normal(value_std), ("param_tokens", self.names[1])),
            (self.spec.n, self.d_out),
            self.param_dtype,
        )
        x = x.astype(self.dtype)
        if resolve_impl(self.spec.impl) == "pallas":  # fused: the [..., n] scores never reach HBM
            return pallas_pattention(
                x,
                keys_nd.astype(self.dtype),
                values_ne.astype(self.dtype),
                tau=self.spec.n_scale**0.5,
                norm=self.spec.norm,
            )
        return pattention(x, keys_nd, values_ne, self.spec.n_scale, self.spec.norm)
