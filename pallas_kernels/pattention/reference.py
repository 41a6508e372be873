"""Plain-jnp Pattention (TokenFormer; Wang et al., arXiv 2410.23168), the kernels' ground truth.
Formulas: /work/notes/CONTRACTS.md, shared with rocket/layers.

x [..., d_in], parameter keys K_P [n, d_in], values V_P [n, d_out], tau = sqrt(n_scale):
  A = x K_P^T  (float32; no 1/sqrt(d) scale)                                       [..., n]
  "l2_norm_gelu" (default): Theta = gelu(A tau / sqrt(sum_n A^2 + 1e-12))
  "gelu_l2_norm":           G = gelu(A); Theta = G tau / sqrt(sum_n G^2 + 1e-12)
  "softmax":                Theta = softmax_n(A) * n
  out = Theta V_P  (float32 accumulation, cast to x's dtype)
gelu is the exact (erf) form, matching torch's F.gelu in the official code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORMS = ("l2_norm_gelu", "gelu_l2_norm", "softmax")
NORM_EPS = 1e-12


def theta_reference(a: jax.Array, tau: float, norm: str) -> jax.Array:
    """Theta(A) over the last axis (the n parameter tokens), float32."""
    if norm == "l2_norm_gelu":
        return jax.nn.gelu(
            a * tau / jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True) + NORM_EPS), approximate=False
        )
    if norm == "gelu_l2_norm":
        g = jax.nn.gelu(a, approximate=False)
        return g * tau / jnp.sqrt(jnp.sum(g * g, axis=-1, keepdims=True) + NORM_EPS)
    if norm == "softmax":
        return jax.nn.softmax(a, axis=-1) * a.shape[-1]
    raise ValueError(f"unknown Pattention norm {norm!r}; available: {NORMS}")


def pattention_reference(
    x: jax.Array, k_p: jax.Array, v_p: jax.Array, *, tau: float, norm: str = "l2_norm_gelu"
) -> jax.Array:
    """Pattention(x; K_P, V_P) -> [..., d_out] in x's dtype. See the module docstring."""
    a = jnp.einsum("...i,ni->...n", x, k_p, preferred_element_type=jnp.float32)
    theta = theta_reference(a, tau, norm)
    return jnp.einsum("...n,no->...o", theta, v_p.astype(jnp.float32)).astype(x.dtype)
