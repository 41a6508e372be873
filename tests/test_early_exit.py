"""LayerSkip's early-exit loss: the schedule's weights, layer dropout rates, the loss itself and its
place in the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rocket.config import ConfigError, LossConfig
from rocket.train.early_exit import dropout_rates, early_exit_loss_fn, exit_weights
from rocket.train.step import init_state, make_train_step, per_token_loss
from rocket.train.transforms import LossTransforms
from tests.helpers import positions_for, tiny_cfg, tiny_model


def test_exit_weights_follow_layerskip_eq_5_6_with_the_rotational_curriculum():
    # L = 4, e_scale = 1: e(l) = sum_{i<=l} i for l < 3 -> (0, 1, 3); e(3) = 3 + (0 + 1 + 2) = 6.
    all_exits = np.array([0.0, 1.0, 3.0, 6.0])
    np.testing.assert_allclose(exit_weights(0, 4, 1.0, "none", 2), all_exits / 10)
    # R = 2: step 0 -> exits 0 and 2 (+ the last); step 1 -> exits 1 and 3; step 2 -> as step 0.
    np.testing.assert_allclose(exit_weights(0, 4, 1.0, "rotational", 2), [0, 0, 3 / 9, 6 / 9])
    np.testing.assert_allclose(exit_weights(1, 4, 1.0, "rotational", 2), [0, 1 / 7, 0, 6 / 7])
    np.testing.assert_allclose(
        exit_weights(2, 4, 1.0, "rotational", 2), exit_weights(0, 4, 1.0, "rotational", 2)
    )
    # e_scale scales the early exits only: e = (0, 2, 6, 3 + 6).
    np.testing.assert_allclose(exit_weights(0, 4, 2.0, "none", 2), np.array([0, 2, 6, 9]) / 17, rtol=1e-6)


def test_layer_dropout_rates_grow_exponentially_from_zero_to_p_max():
    p = np.asarray(dropout_rates(5, 0.2))
    np.testing.assert_allclose(p, [(2 ** (l / 4) - 1) * 0.2 for l in range(5)], rtol=1e-6)
    assert p[0] == 0 and p[-1] == pytest.approx(0.2)


def _batch(cfg, b=2, t=12):
    tok = jax.random.randint(jax.random.key(0), (b, t + 1), 0, cfg.vocab_size)
    return {
        "inputs": tok[:, :-1],
        "targets": tok[:, 1:],
        "positions": positions_for(tok[:, :-1]),
        "segment_ids": jnp.ones((b, t), jnp.int32),
        "weights": jnp.ones((b, t), jnp.float32),
        "num_bytes": jnp.ones((b, t), jnp.int32),
    }


def test_the_last_exit_is_the_model_and_the_loss_is_the_weighted_exit_sum():
    model, params = tiny_model(n_layers=3)
    batch = _batch(model.cfg)
    fn = early_exit_loss_fn(model.cfg, e_scale=1.0, kind="none", rotation=1, p_max=0.0)
    loss, metrics = fn(params["params"], batch, jnp.int32(0), jax.random.key(1))
    plain = float(jnp.mean(per_token_loss(model, params["params"], batch, routing="causal")[0]))
    assert float(metrics["early_exit/ce_layer2"]) == pytest.approx(plain, rel=1e-5)
    ces = np.array([float(metrics[f"early_exit/ce_layer{i}"]) for i in range(3)])
    assert float(loss) == pytest.approx(float(np.dot(exit_weights(0, 3, 1.0, "none", 1), ces)), rel=1e-5)
    # Layer dropout at p_max ~ 1 drops the last layer of (almost) every row: its exit changes.
    drop = early_exit_loss_fn(model.cfg, e_scale=1.0, kind="none", rotation=1, p_max=0.999)
    assert float(
        drop(params["params"], batch, jnp.int32(0), jax.random.key(1))[1]["early_exit/ce_layer2"]
    ) != pytest.approx(plain)


def test_the_train_step_adds_the_early_exit_loss_and_its_gradient_reaches_the_exits():
    cfg = tiny_cfg(n_layers=2)
    model = tiny_model(n_layers=2)[0]
    lcfg = LossConfig(early_exit_scale=1.0, early_exit_curriculum="none")
    transforms = LossTransforms.from_config(lcfg, cfg)
    tx = optax.sgd(0.1)
    state = init_state(model, tx, jax.random.key(0), 12)
    step = jax.jit(make_train_step(model, tx, transforms=transforms))
    plain = jax.jit(make_train_step(model, tx))
    batch = _batch(cfg)
    new, metrics = step(state, batch, jax.random.key(2))
    ref, _ = plain(state, batch, jax.random.key(2))
    assert "transform/early_exit" in metrics and float(metrics["transform/early_exit"]) > 0
    # The exit of layer 0 is trained: layer 0's parameters move differently than without the loss.
    diff = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), new.params["layers_0"], ref.params["layers_0"]
    )
    assert max(jax.tree.leaves(diff)) > 1e-6


def test_bad_early_exit_configs_are_config_errors():
    with pytest.raises(ConfigError, match="needs a dense model"):
        LossTransforms.from_config(
            LossConfig(early_exit_scale=1.0), tiny_cfg(n_layers=2, mod=dict(pattern="dense,mod"))
        )
    with pytest.raises(ConfigError, match="layer_dropout"):
        LossConfig(layer_dropout=1.5).validate()
    with pytest.raises(ConfigError, match="early_exit_curriculum"):
        LossConfig(early_exit_curriculum="gradual").validate()
