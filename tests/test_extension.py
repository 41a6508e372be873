"""Extending rocket from another project, without editing it: a user's own attention kind,
projection kind and training transform, registered from this module and selected by config.
(A user's own decoding method: tests/test_decode_registry.py.) docs/extending.md shows the same.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rocket.config import (
    ATTENTION_KINDS,
    PROJECTION_KINDS,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    from_config_dict,
    to_config_dict,
)
from rocket.data import random_batch
from rocket.models import Transformer, param_count
from rocket.models.kinds import ProjectionKind
from rocket.train.step import init_state, make_train_step, per_token_loss
from rocket.train.transforms import LossTransforms, register_transform
from tests.helpers import assert_cached_decoding_matches, positions_for, tiny_cfg, tiny_model

# --- a user's attention kind: softmax attention through jax.nn.dot_product_attention ------------
TRACED: list[tuple[int, ...]] = []  # the query shapes sdpa_attention was traced with


def sdpa_attention(q_bthd, k_bskd, v_bskd, mask_bts, *, power=None):
    """softmax(q k^T / sqrt(d) + mask) v by jax's own kernel (K/V heads repeated for GQA)."""
    del power
    TRACED.append(q_bthd.shape)
    groups = q_bthd.shape[2] // k_bskd.shape[2]
    k, v = (jnp.repeat(x, groups, axis=2) for x in (k_bskd, v_bskd))
    return jax.nn.dot_product_attention(q_bthd, k, v, mask=mask_bts[:, None])


def test_a_registered_attention_kind_is_selected_by_config_and_decodes_with_a_cache():
    with pytest.raises(ConfigError, match="'model.attention.kind'"):
        tiny_cfg(attention=dict(kind="user_sdpa"))  # unknown before registration
    ATTENTION_KINDS.register("user_sdpa", sdpa_attention)
    model, params = tiny_model(attention=dict(kind="user_sdpa"))
    softmax = Transformer(
        dataclasses.replace(model.cfg, attention=dataclasses.replace(model.cfg.attention, kind="softmax"))
    )
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 258)
    TRACED.clear()
    logits = model.apply(params, tokens, positions_for(tokens))[0]
    assert TRACED == [(2, 12, 4, 16)] * 2  # both layers ran the user's function...
    # ... and it is the same function as the built-in softmax kind on the same parameters: the user's code ran
    np.testing.assert_allclose(logits, softmax.apply(params, tokens, positions_for(tokens))[0], atol=2e-5)
    assert_cached_decoding_matches(model, params, tokens, (5, 1, 6), logits, max_len=16, atol=2e-5)
    cfg = ExperimentConfig(model=model.cfg, data=DataConfig(seq_len=64))
    assert from_config_dict(to_config_dict(cfg)) == cfg  # and it round-trips through config files


# --- a user's projection kind: low-rank factorised projections and FFN -------------------------
class LowRank(nn.Module):
    """x[..., D_in] -> x A B, A [D_in, r], B [r, features]."""

    features: int
    rank: int = 4

    @nn.compact
    def __call__(self, x):
        a = self.param("a", nn.initializers.normal(0.02), (x.shape[-1], self.rank))
        b = self.param("b", nn.initializers.normal(0.02), (self.rank, self.features))
        return x @ a @ b


LOWRANK = ProjectionKind(
    attention=lambda cfg: lambda features, axes, name: LowRank(features, name=name),
    ffn=lambda cfg, name: LowRank(cfg.d_model, rank=8, name=name),
)


def test_a_registered_projection_kind_builds_every_projection_and_trains():
    PROJECTION_KINDS.register("user_lowrank", LOWRANK)
    model, params = tiny_model(projection=dict(kind="user_lowrank"))
    layer = params["params"]["layers_0"]
    assert {k: v["a"].shape for k, v in layer["attn"].items()} == {
        "wq": (64, 4),
        "wk": (64, 4),
        "wv": (64, 4),
        "wo": (64, 4),
    }
    assert layer["mlp"]["b"].shape == (8, 64)
    # parameter accounting counts the user's modules from their parameter tree
    assert param_count(model.cfg) == sum(x.size for x in jax.tree.leaves(params))
    batch = {k: jnp.asarray(v) for k, v in random_batch(2, 16, 258, seed=0).items()}
    grads = jax.grad(lambda p: jnp.mean(per_token_loss(model, p, batch)[0]))(params["params"])
    assert (
        float(jnp.abs(grads["layers_1"]["attn"]["wq"]["b"]).max()) > 0
    )  # the user's modules are in the graph


# --- a user's training transform: train on the first half of every row only --------------------
def first_half(lcfg: LossConfig, mcfg) -> LossTransforms:
    """Token weights 2 on the first half of each row, 0 on the second (mean 1, as rocket's own)."""

    def weights(nats_bt, ctx):
        t = nats_bt.shape[1]
        return jnp.broadcast_to(2.0 * (jnp.arange(t) < t // 2), nats_bt.shape).astype(jnp.float32), {}

    return LossTransforms(weight_fns=(weights,))


def test_a_registered_training_transform_is_selected_by_config_and_shapes_the_objective():
    with pytest.raises(ConfigError, match="'loss.transforms'"):
        LossConfig(transforms="user_first_half")
    register_transform("user_first_half", first_half)
    with pytest.raises(ValueError, match="registered already"):
        register_transform("user_first_half", first_half)
    lcfg = LossConfig(transforms="user_first_half")
    model, params = tiny_model()
    cfg = model.cfg
    transforms = LossTransforms.from_config(lcfg, cfg)
    tx = optax.sgd(0.1)
    state = init_state(model, tx, jax.random.key(0), 16)
    batch = {k: jnp.asarray(v) for k, v in random_batch(2, 16, 258, seed=1).items()}
    new, metrics = jax.jit(make_train_step(model, tx, transforms=transforms))(state, batch, jax.random.key(2))
    half = dict(batch, weights=batch["weights"].at[:, 8:].set(0.0))
    new_plain, plain = jax.jit(make_train_step(model, tx))(state, half, jax.random.key(2))
    # the user's transform ran in the step: objective and update are the plain step's on first halves
    np.testing.assert_allclose(metrics["transform/objective"], plain["loss"], rtol=1e-5)
    chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    jax.tree.map(chex_close, new.params, new_plain.params)
