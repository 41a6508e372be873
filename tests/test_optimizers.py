"""SPAM, AdamP and the Power scheduler (rocket.train.optimizers) and their selection by config."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rocket.config import ConfigError, OptimConfig
from rocket.train.optim import make_optimizer, make_schedule
from rocket.train.optimizers import power_schedule, scale_by_adamp, scale_by_spam


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"w": jax.random.normal(k1, (6, 5)), "b": jax.random.normal(k2, (5,))}


def _grads(i):
    return jax.tree.map(lambda p: jax.random.normal(jax.random.key(100 + i), p.shape), _params())


def _run(tx, steps, grads_fn=_grads):
    params = _params()
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for i in range(steps):
        u, state = update(grads_fn(i), state, params)
        out.append(u)
    return out


def test_spam_without_spikes_or_resets_is_adam():
    spam = scale_by_spam(0.9, 0.999, 1e-8, theta=1e12, reset_interval=10_000, clip_skip=1, warmup_steps=0)
    for a, b in zip(_run(spam, 30), _run(optax.scale_by_adam(0.9, 0.999, 1e-8), 30)):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), a, b)


def test_spam_clips_a_spiked_coordinate_to_sqrt_theta_v_and_leaves_the_rest():
    theta, b2 = 4.0, 0.5
    spam = scale_by_spam(0.0, b2, 0.0, theta=theta, reset_interval=1000, clip_skip=1, warmup_steps=0)
    params = {"w": jnp.zeros(3)}
    state = spam.init(params)
    _, state = spam.update({"w": jnp.array([1.0, 1.0, 1.0])}, state, params)  # v = 0.5 everywhere
    u, state = spam.update({"w": jnp.array([100.0, 1.0, -1.0])}, state, params)
    g_clipped = math.sqrt(theta * 0.5)  # the spike becomes sign(g) sqrt(theta v) = 1.414...
    v = np.array([b2 * 0.5 + (1 - b2) * g_clipped**2, 0.5 * b2 + 0.5, 0.5 * b2 + 0.5])
    v_hat = v / (1 - b2**2)
    np.testing.assert_allclose(u["w"], np.array([g_clipped, 1.0, -1.0]) / np.sqrt(v_hat), rtol=1e-6)


def test_spam_reset_zeroes_moments_restarts_bias_correction_and_warms_up_again():
    spam = scale_by_spam(0.9, 0.999, 0.0, theta=1e12, reset_interval=4, clip_skip=1, warmup_steps=2)
    ups = _run(spam, 9, grads_fn=lambda i: {"w": jnp.full((6, 5), 2.0 if i < 3 else -1.0), "b": jnp.ones(5)})
    # step 4 resets: fresh moments of one gradient -> m_hat / sqrt(v_hat) = sign(g), times warmup 0.01
    np.testing.assert_allclose(ups[3]["w"], -0.01, rtol=1e-4)
    np.testing.assert_allclose(ups[4]["w"], -(0.01 + 0.99 * 0.5), rtol=1e-4)  # warmup k = 1 of 2
    np.testing.assert_allclose(ups[5]["w"], -1.0, rtol=1e-4)  # warmup done, constant g: |update| = 1
    np.testing.assert_allclose(ups[7]["w"], -0.01, rtol=1e-4)  # the next reset at step 8 re-triggers it
    np.testing.assert_allclose(ups[1]["w"], 1.0, rtol=1e-4)  # before the first reset: no warmup


def test_adamp_with_zero_delta_is_adamw_and_projects_scale_invariant_weights():
    adamw = optax.adamw(1.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1)
    adamp0 = optax.chain(
        scale_by_adamp(0.9, 0.999, 1e-8, weight_decay=0.1, delta=0.0), optax.scale_by_learning_rate(1.0)
    )
    for a, b in zip(_run(adamp0, 5), _run(adamw, 5)):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), a, b)
    # A gradient orthogonal to every column of w (as for weights feeding a norm): the update has no
    # radial component per output column, and the decay is scaled by wd_ratio.
    w = jnp.eye(4)[:, :3] + 0.1
    g = jnp.stack([jnp.array([1.0, -1.0, 0.0, 0.0])] * 3, 1)
    g = g - w * jnp.sum(w * g, 0) / jnp.sum(w * w, 0)
    tx = scale_by_adamp(0.9, 0.999, 1e-8, weight_decay=0.0, delta=0.1)
    u, _ = tx.update({"w": g}, tx.init({"w": w}), {"w": w})
    np.testing.assert_allclose(jnp.sum(u["w"] * w, 0), 0.0, atol=1e-5)
    u_plain = optax.scale_by_adam(0.9, 0.999, 1e-8).update({"w": g}, optax.scale_by_adam().init({"w": w}))[0]
    assert np.abs(np.sum(u_plain["w"] * w, 0)).max() > 1e-2  # Adam alone keeps a radial part
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": g}, tx.init({"w": w}))


def _reference_adamp_first_step(w_oi, g_oi, delta=0.1, eps=1e-8):
    """clovaai/AdamP's first update of a PyTorch (out, in) weight, in numpy: p = g / (|g| + eps)
    (Adam's first bias-corrected step), projected per row (`_channel_view`) if every row's
    |cos(g, w)| < delta / sqrt(in), else over the whole tensor (`_layer_view`) if that qualifies."""
    p = g_oi / (np.abs(g_oi) + eps)
    for view in (lambda x: x.reshape(x.shape[0], -1), lambda x: x.reshape(1, -1)):
        w_r, g_r, p_r = view(w_oi), view(g_oi), view(p)
        cos = np.abs((w_r * g_r).sum(1)) / (np.linalg.norm(w_r, axis=1) * np.linalg.norm(g_r, axis=1) + eps)
        if cos.max() < delta / np.sqrt(w_r.shape[1]):
            w_hat = w_r / (np.linalg.norm(w_r, axis=1, keepdims=True) + eps)
            return (p_r - w_hat * (w_hat * p_r).sum(1, keepdims=True)).reshape(w_oi.shape)
    return p


@pytest.mark.parametrize("name", ["wq", "wo", "embedding", "w_up"])
def test_adamp_channel_view_matches_the_reference_on_the_pytorch_layout(name):
    """Flax layouts vs the reference's (out, in) view of the same weight: attention [d, H, d_h]
    (rows = the H * d_h outputs), output projection [H, d_h, d], embeddings (V, D) (rows = tokens,
    as nn.Embedding) and a Dense kernel (in, out). The gradient is orthogonal to every row of the
    reference's view, so only the right view projects (a wrong view sees other rows)."""
    d, h, dh = 8, 2, 4
    to_torch, from_torch = {  # flax array -> (out, in) and back
        "wq": (lambda x: x.reshape(d, h * dh).T, lambda y: y.T.reshape(d, h, dh)),
        "wo": (lambda x: x.reshape(h * dh, d).T, lambda y: y.T.reshape(h, dh, d)),
        "embedding": (lambda x: x, lambda y: y),
        "w_up": (lambda x: x.T, lambda y: y.T),
    }[name]
    shape_oi = {"wq": (h * dh, d), "wo": (d, h * dh), "embedding": (12, d), "w_up": (16, d)}[name]
    rng = np.random.default_rng(0)
    w_oi = rng.normal(size=shape_oi) + 1.0
    g_oi = rng.normal(size=shape_oi)
    g_oi -= w_oi * (w_oi * g_oi).sum(1, keepdims=True) / (w_oi * w_oi).sum(1, keepdims=True)
    want = _reference_adamp_first_step(w_oi, g_oi)
    np.testing.assert_allclose((want * w_oi).sum(1), 0.0, atol=1e-5)  # projected per row
    tx = scale_by_adamp(0.9, 0.999, 1e-8, weight_decay=0.0, delta=0.1)
    params, grads = {name: jnp.asarray(from_torch(w_oi), jnp.float32)}, {name: jnp.asarray(from_torch(g_oi))}
    u, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(to_torch(np.asarray(u[name])), want, rtol=1e-4, atol=1e-5)


def test_power_schedule_matches_its_formula():
    a, b, c, lr_max = 4.6, -0.51, 4096, 0.02
    sched = power_schedule(
        lr_max=lr_max,
        a=a,
        b=b,
        tokens_per_step=c,
        warmup_steps=10,
        decay_steps=20,
        total_steps=100,
        final_factor=0.1,
    )
    law = lambda s: min(lr_max, a * (s * c) ** b)
    for step in (10, 37, 79):
        np.testing.assert_allclose(float(sched(step)), law(step), rtol=1e-5)
    np.testing.assert_allclose(float(sched(5)), law(10) * 0.5, rtol=1e-5)  # linear warmup to eta(n_warmup)
    e, x, f = math.e, 10.0, 0.1
    factor = (1 - f) * e / (e - 1) * math.exp(-x / 20) + (f * e - 1) / (e - 1)
    np.testing.assert_allclose(float(sched(90)), law(80) * factor, rtol=1e-5)
    np.testing.assert_allclose(float(sched(100)), law(80) * f, rtol=1e-5)  # decays to the final factor
    big = power_schedule(lr_max=1.0, a=a, b=b, tokens_per_step=2**20, warmup_steps=0)
    assert float(big(10_000)) > 0  # step * tokens beyond int32: computed in float
    small = power_schedule(lr_max=1e-3, a=a, b=b, tokens_per_step=8, warmup_steps=0)
    assert float(small(3)) == pytest.approx(1e-3)  # capped at lr_max early


@pytest.mark.parametrize("name", ["spam", "adamp"])
def test_new_optimizers_are_selectable_and_reduce_a_quadratic(name):
    tx, _ = make_optimizer(
        OptimConfig(name=name, lr=0.1, warmup_steps=0, schedule="constant", spam_warmup_steps=0), 50
    )
    params = {"w": jnp.ones((4, 3)) * 3.0}
    state = tx.init(params)
    loss = lambda p: jnp.sum(jnp.square(p["w"] - 1.0))
    step = jax.jit(
        lambda p, s: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(jax.grad(loss)(p), s, p))
    )
    for _ in range(50):
        params, state = step(params, state)
    assert float(loss(params)) < 0.1 * 48.0


def test_power_schedule_by_config_and_bad_optim_config():
    sched = make_schedule(
        OptimConfig(schedule="power", lr=0.02, warmup_steps=5, decay_fraction=0.1), 100, 1024
    )
    assert 0 < float(sched(50)) <= 0.02
    with pytest.raises(ValueError, match="tokens_per_step"):
        make_schedule(OptimConfig(schedule="power"), 100)
    for field, value in [
        ("name", "spam2"),
        ("schedule", "powerlaw"),
        ("spam_theta", 0.0),
        ("spam_clip_skip", 0),
        ("power_b", 0.5),
    ]:
        with pytest.raises(ConfigError, match=f"'optim.{field}'"):
            OptimConfig(**{field: value})
