"""Gated feed-forward block (Shazeer, 2020, arXiv 2002.05202): W_down (act(x W_gate) * x W_up).

act = silu (SwiGLU, the default) or the tanh-approximate GeLU (GeGLU, as in Gemma). The gate and up
projections run as one matmul x [W_gate | W_up] (each output element is the same dot product; one
wide matmul and one weight-gradient matmul are faster than two narrow ones on CPU and GPU alike).
The parameters stay two matrices."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.layers.init import kernel_init

ACTIVATIONS = {"silu": nn.silu, "gelu_tanh": lambda x: nn.gelu(x, approximate=True)}


class SwiGLU(nn.Module):
    """x[B, T, D] -> [B, T, D] through a gated hidden layer of width F (`activation`: a key of
    `ACTIVATIONS`)."""

    d_ff: int
    n_layers: int = 1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    activation: str = "silu"

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> jax.Array:
        d = x_btd.shape[-1]
        w_gate_df = self.param("w_gate", kernel_init(("embed", "mlp")), (d, self.d_ff), self.param_dtype)
        w_up_df = self.param("w_up", kernel_init(("embed", "mlp")), (d, self.d_ff), self.param_dtype)
        w_down_fd = self.param(
            "w_down", kernel_init(("mlp", "embed"), depth=self.n_layers), (self.d_ff, d), self.param_dtype
        )
        x = x_btd.astype(self.dtype)
        w_gate_up_d2f = jnp.concatenate([w_gate_df, w_up_df], axis=1).astype(self.dtype)
        gate_btf, up_btf = jnp.split(x @ w_gate_up_d2f, 2, axis=-1)
        h_btf = ACTIVATIONS[self.activation](gate_btf) * up_btf
        h_btf = nn.with_logical_constraint(h_btf, ("activation_batch", "activation_length", "activation_mlp"))
        return h_btf @ w_down_fd.astype(self.dtype)
