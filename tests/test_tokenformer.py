"""TokenFormer: Pattention math, exact function-preserving growth, training on after growth."""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rocket.config import ConfigError, ModelConfig
from rocket.layers.pattention import PattentionSpec, pattention, pattention_weights
from rocket.models import Transformer, param_count
from rocket.models.tokenformer import grow
from rocket.train.grow import grow_train_state
from rocket.train.step import init_state, make_train_step
from tests.helpers import TINY, positions_for, tiny_cfg, tiny_model

TF = dict(projection=dict(kind="pattention", param_tokens=16, param_tokens_ffn=24))

_erf = np.vectorize(math.erf)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _reference_theta(a, n_scale, norm):
    """Plain numpy (float64) transcription of the official `nonlinear_norm_func`."""
    a = np.asarray(a, np.float64)
    tau = math.sqrt(n_scale)
    if norm == "l2_norm_gelu":
        return _gelu(a * tau / np.linalg.norm(a, axis=-1, keepdims=True))
    if norm == "gelu_l2_norm":
        g = _gelu(a)
        return g * tau / np.linalg.norm(g, axis=-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True) * a.shape[-1]


@pytest.mark.parametrize("norm", ["l2_norm_gelu", "gelu_l2_norm", "softmax"])
def test_pattention_weights_match_a_numpy_reference(norm):
    a = jax.random.normal(jax.random.key(0), (3, 5, 12)) * 3
    np.testing.assert_allclose(
        pattention_weights(a, 12, norm), _reference_theta(a, 12, norm), rtol=2e-5, atol=2e-6
    )
    if norm != "softmax":  # tau = sqrt(n_scale) really is the scale constant, not the layer's n
        assert not np.allclose(pattention_weights(a, 48, norm), _reference_theta(a, 12, norm), atol=1e-3)


@pytest.mark.parametrize("norm", ["l2_norm_gelu", "gelu_l2_norm"])
def test_zero_keys_with_pinned_scale_are_neutral_and_unpinned_or_random_keys_are_not(norm):
    kx, kk, kv, kn = jax.random.split(jax.random.key(1), 4)
    x = jax.random.normal(kx, (4, 7, 8))
    keys, values = jax.random.normal(kk, (6, 8)), jax.random.normal(kv, (6, 5))
    out = pattention(x, keys, values, 6, norm)
    grown_v = jnp.concatenate([values, jax.random.normal(kn, (4, 5))])  # any values: zero keys ignore them
    zero_k = jnp.concatenate([keys, jnp.zeros((4, 8))])
    np.testing.assert_allclose(
        pattention(x, zero_k, grown_v, 6, norm), out, atol=2e-6
    )  # summation order only
    assert float(jnp.abs(pattention(x, zero_k, grown_v, 10, norm) - out).max()) > 1e-2  # tau not pinned
    rand_k = jnp.concatenate([keys, 0.1 * jax.random.normal(kn, (4, 8))])
    assert float(jnp.abs(pattention(x, rand_k, grown_v, 6, norm) - out).max()) > 1e-2  # random new keys


@pytest.mark.parametrize("scan", [False, True])
def test_grown_model_computes_the_same_logits(scan):
    model, params = tiny_model(**TF, scan_layers=scan)
    tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, 258)
    before, _ = model.apply(params, tokens, positions_for(tokens))
    grown, cfg = grow(params, model.cfg, 40)
    assert cfg.resolved_n_param_tokens == 40 and cfg.resolved_n_param_tokens_ffn == 60  # FFN in proportion
    assert cfg.projection.scale_tokens == 16 and cfg.projection.scale_tokens_ffn == 24
    after, _ = Transformer(cfg).apply(grown, tokens, positions_for(tokens))
    chex.assert_trees_all_close(after, before, atol=1e-5)
    assert param_count(cfg) == sum(x.size for x in jax.tree.leaves(grown))
    # Growing again from the grown config keeps the original scale constants.
    _, cfg2 = grow(grown, cfg, 48)
    assert cfg2.projection.scale_tokens == 16 and cfg2.projection.scale_tokens_ffn == 24


def test_grown_state_trains_on_and_its_new_tokens_learn():
    model, _ = tiny_model(**TF)
    tx = optax.adamw(1e-2)
    state = nn.meta.unbox(init_state(model, tx, jax.random.key(0), 16))
    batch = {
        "inputs": jax.random.randint(jax.random.key(3), (2, 16), 0, 258),
        "targets": jax.random.randint(jax.random.key(4), (2, 16), 0, 258),
        "positions": positions_for(jnp.zeros((2, 16))),
        "segment_ids": jnp.ones((2, 16), jnp.int32),
        "weights": jnp.ones((2, 16)),
        "num_bytes": jnp.ones((2, 16), jnp.int32),
    }
    # jitted: one compile per step function is cheaper than op-by-op dispatch of the backward pass
    state, _ = jax.jit(make_train_step(model, tx))(state, batch, jax.random.key(5))  # moments nonzero
    grown, cfg = grow_train_state(state, model.cfg, tx, 24)
    mu = grown.opt_state[0].mu["layers_0"]["attn"]["wq"]["keys"]
    old_mu = state.opt_state[0].mu["layers_0"]["attn"]["wq"]["keys"]
    np.testing.assert_array_equal(mu[:16], old_mu)
    assert float(jnp.abs(old_mu).sum()) > 0 and float(jnp.abs(mu[16:]).sum()) == 0  # new rows start at zero
    assert int(grown.opt_state[0].count) == int(state.opt_state[0].count) and int(grown.step) == 1
    new_state, metrics = jax.jit(make_train_step(Transformer(cfg), tx))(grown, batch, jax.random.key(6))
    assert np.isfinite(float(metrics["loss"]))
    new_keys = new_state.params["layers_0"]["mlp"]["keys"][24:]  # FFN grew 24 -> 36
    assert new_keys.shape == (12, 64) and float(jnp.abs(new_keys).max()) > 0  # zero keys left zero


def test_growth_and_config_errors():
    model, params = tiny_model(**TF)
    with pytest.raises(ValueError, match="fewer tokens"):
        grow(params, model.cfg, 8)
    with pytest.raises(ValueError, match="pass new_num_param_tokens_ffn"):
        grow(params, model.cfg, 17)  # 24 * 17 / 16 is not an integer
    with pytest.raises(ValueError, match="softmax"):
        grow(params, tiny_cfg(**TF, **{"projection.norm": "softmax"}), 32)
    with pytest.raises(ValueError, match="pattention"):
        grow(params, ModelConfig(**TINY), 32)
    with pytest.raises(ConfigError, match="'model.projection.param_tokens'"):
        tiny_cfg(**TF, **{"projection.param_tokens": 0})
    with pytest.raises(ConfigError, match="'model.projection.kind'"):
        tiny_cfg(**{"projection.kind": "lowrank"})
    with pytest.raises(ConfigError, match="'model.projection.norm'"):
        tiny_cfg(**{"projection.norm": "relu"})
    with pytest.raises(ValueError, match="n >= 1"):
        PattentionSpec(0, 1)
