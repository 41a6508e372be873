"""The layer kinds (projection, attention, embedding) alone and composed in one tiny model: causality,
cached decoding equals the full forward, packing isolation, and a jitted train step."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rocket.config import ConfigError, ExperimentConfig, from_config_dict, to_config_dict
from rocket.data.packing import random_batch
from rocket.decode import ModelStep, new_cache, prefill
from rocket.train.step import MODEL_RNG_STREAM, init_state, make_train_step
from tests.helpers import assert_cached_decoding_matches, positions_for, tiny_cfg, tiny_model

ALL = dict(
    attention=dict(kind="softplus", softplus_power=3.0),
    projection=dict(kind="pattention", param_tokens=32),
    embedding=dict(kind="lexinvariant"),
)
KINDS = {
    "pattention": dict(projection=dict(kind="pattention", param_tokens=32, norm="gelu_l2_norm")),
    "softplus": dict(attention=dict(kind="softplus", softplus_power=3.0)),
    "lexinvariant": dict(embedding=dict(kind="lexinvariant")),
    "all+scan": dict(ALL, scan_layers=True),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_causal_and_cached_decoding_equals_the_full_forward(name):
    model, params = tiny_model(**KINDS[name])
    rngs = {MODEL_RNG_STREAM: jax.random.key(7)}  # lexinvariant: the same key at every step
    tokens = jax.random.randint(jax.random.key(1), (2, 14), 0, 258)
    full, _ = model.apply(params, tokens, positions_for(tokens), rngs=rngs)
    changed = tokens.at[:, 9].set((tokens[:, 9] + 1) % 258)
    after, _ = model.apply(params, changed, positions_for(changed), rngs=rngs)
    chex.assert_trees_all_close(after[:, :9], full[:, :9], atol=1e-6)  # a future token changes nothing before
    assert float(jnp.abs(after[:, 9:] - full[:, 9:]).max()) > 1e-4

    # a prefill, single steps, a block on a filled cache: two block shapes, so two compiles
    assert_cached_decoding_matches(
        model, params, tokens, [6, 1, 1, 6], full, max_len=16, atol=5e-5, rngs=rngs
    )


def test_prefill_without_rng_matches_the_deterministic_forward():
    model, params = tiny_model(**ALL)
    tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, 258)
    full, _ = model.apply(params, tokens, positions_for(tokens))
    out, _ = prefill(ModelStep(model, params), new_cache(model, 2, 12), tokens, jnp.array([9, 5]))
    last = jnp.stack([out.logits[0, 8], out.logits[1, 4]])
    chex.assert_trees_all_close(last, jnp.stack([full[0, 8], full[1, 4]]), atol=5e-5)


def test_packed_documents_do_not_see_each_other_with_all_kinds():
    model, params = tiny_model(**ALL)
    a = jax.random.randint(jax.random.key(3), (1, 6), 0, 258)
    b = jax.random.randint(jax.random.key(4), (1, 9), 0, 258)
    packed = jnp.concatenate([a, b], axis=1)
    seg = jnp.array([[1] * 6 + [2] * 9])
    pos = jnp.concatenate([positions_for(a), positions_for(b)], axis=1)
    rngs = {MODEL_RNG_STREAM: jax.random.key(8)}
    logits, _ = model.apply(params, packed, pos, segment_ids=seg, rngs=rngs)
    alone, _ = model.apply(params, b, positions_for(b), segment_ids=jnp.full((1, 9), 2), rngs=rngs)
    chex.assert_trees_all_close(logits[:, 6:], alone, atol=5e-5)  # same row, same segment id: same E_s


def test_train_step_with_all_kinds_composed():
    model, _ = tiny_model(**ALL)
    tx = optax.adamw(3e-3)
    state = nn.meta.unbox(init_state(model, tx, jax.random.key(0), 32))
    step = jax.jit(make_train_step(model, tx, microbatches=2))
    batch = {k: jnp.asarray(v) for k, v in random_batch(4, 32, 258).items()}
    new_state, metrics = step(state, batch, jax.random.key(1))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    assert float(optax.tree.norm(jax.tree.map(jnp.subtract, new_state.params, state.params))) > 0


def test_kind_overrides_round_trip_through_ml_collections():
    cfg = ExperimentConfig(model=tiny_cfg(**ALL, **{"embedding.learned_prob": 0.25, "max_seq_len": 256}))
    assert from_config_dict(to_config_dict(cfg)) == cfg
    cd = to_config_dict(ExperimentConfig())
    cd.model.attention.softplus_power = 15.0  # a placeholder float field, settable from the command line
    with pytest.raises(ConfigError, match="'model.attention.softplus_power'"):
        from_config_dict(cd)  # ... but only with attention.kind="softplus"
    cd.model.attention.kind = "softplus"
    cd.model.projection.param_tokens = 64
    assert from_config_dict(cd).model.attention.softplus_power == 15.0
