"""The gated MLP's hand-split backward (`rocket.layers.mlp.gated_hidden`, a custom VJP) equals
reverse-mode autodiff of the plain formula act(x W_gate) * (x W_up), for both activations, in
float32 (to rounding) and bfloat16, and inside `jax.checkpoint` + `lax.scan` as the model uses it."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.layers.mlp import ACTIVATIONS, SwiGLU, gated_hidden

B, T, D, F = 2, 5, 16, 24


def _inputs(dtype):
    kx, kg, ku, kd = jax.random.split(jax.random.key(3), 4)
    return (
        jax.random.normal(kx, (B, T, D)).astype(dtype),
        (0.3 * jax.random.normal(kg, (D, F))).astype(dtype),
        (0.3 * jax.random.normal(ku, (D, F))).astype(dtype),
        jax.random.normal(kd, (B, T, F)).astype(dtype),  # a fixed cotangent direction
    )


def _grads(hidden, act, x, wg, wu, probe):
    return jax.grad(lambda *a: jnp.sum(hidden(act, *a).astype(jnp.float32) * probe), argnums=(0, 1, 2))(
        x, wg, wu
    )


def _plain(act, x, wg, wu):
    return act(x @ wg) * (x @ wu)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_custom_vjp_equals_autodiff(activation, dtype, tol):
    act = ACTIVATIONS[activation]
    x, wg, wu, probe = _inputs(dtype)
    np.testing.assert_allclose(
        np.asarray(gated_hidden(act, x, wg, wu), np.float32),
        np.asarray(_plain(act, x, wg, wu), np.float32),
        atol=tol,
    )
    for got, want in zip(_grads(gated_hidden, act, x, wg, wu, probe), _grads(_plain, act, x, wg, wu, probe)):
        assert got.dtype == want.dtype == dtype
        scale = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
        np.testing.assert_allclose(
            np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol * scale
        )


def test_module_gradients_under_checkpointed_scan():
    """SwiGLU applied twice through `lax.scan` of a rematerialised step: parameter and input
    gradients equal those of the plain formula with the same weights."""
    mlp = SwiGLU(d_ff=F)
    x, _, _, _ = _inputs(jnp.float32)
    params = nn.meta.unbox(mlp.init(jax.random.key(0), x)["params"])
    assert set(params) == {"w_gate", "w_up", "w_down"}  # two matrices, whatever the forward fuses

    def loss(apply, p, x):
        step = jax.checkpoint(lambda h, _: (h + apply(p, h), None))
        return jnp.sum(jnp.sin(jax.lax.scan(step, x, None, length=2)[0]))

    def plain(p, h):
        return _plain(ACTIVATIONS["silu"], h, p["w_gate"], p["w_up"]) @ p["w_down"]

    got = jax.grad(lambda p, x: loss(lambda p, h: mlp.apply({"params": p}, h), p, x), argnums=(0, 1))(
        params, x
    )
    want = jax.grad(lambda p, x: loss(plain, p, x), argnums=(0, 1))(params, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
