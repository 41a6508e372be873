"""Mixture-of-Depths: exactness at capacity 1, causality of causal routing, the documented
non-causality of top-k routing, router gradients, cache consistency and static shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rocket.models import flops_per_token, param_count
from rocket.models.mod import MoDBlock
from rocket.models.transformer import Block
from rocket.train.step import init_state, make_train_step
from tests.helpers import TINY, assert_cached_decoding_matches, positions_for, tiny_cfg, tiny_model

MOD = dict(mod=dict(pattern="dense,mod", capacity=0.25))


def _tokens(b=2, t=16, seed=1):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, TINY["vocab_size"])


def _scale_routers(params, factor):
    """Sharper router scores, so routing decisions depend strongly on the tokens."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x * factor if "router" in jax.tree_util.keystr(path) else x, params
    )


@pytest.mark.parametrize("routing", ["topk", "causal"])
def test_capacity_one_with_unit_gate_equals_the_dense_model(routing):
    """p-MoD's zero-initialised TanhNorm gate is exactly 1: MoD at c = 1 is the dense block."""
    model, params = tiny_model(mod=dict(pattern="mod", capacity=1.0, gate="tanhnorm", string=True))
    dense, _ = tiny_model()
    dense_params = {
        "params": {k: v["block"] if k.startswith("layers_") else v for k, v in params["params"].items()}
    }
    tokens = _tokens()
    want, _ = dense.apply(dense_params, tokens, positions_for(tokens))
    got, aux = model.apply(params, tokens, positions_for(tokens), routing=routing)
    np.testing.assert_array_equal(got, want)
    assert float(aux["metrics"]["mod/layer0/selected"]) == 1.0


def test_causal_routing_is_causal_and_topk_routing_is_not():
    model, params = tiny_model(**MOD)
    params = _scale_routers(params, 300.0)
    tokens = _tokens(t=24)
    cut = 12
    changed = tokens.at[:, cut:].set((tokens[:, cut:] * 5 + 3) % TINY["vocab_size"])
    apply = jax.jit(model.apply, static_argnames="routing")
    for routing in ("causal", "topk"):
        a, aux = apply(params, tokens, positions_for(tokens), routing=routing)
        b, _ = apply(params, changed, positions_for(changed), routing=routing)
        past_diff = float(jnp.abs(a[:, :cut] - b[:, :cut]).max())
        if routing == "causal":
            assert 0.0 < float(aux["metrics"]["mod/layer1/selected"]) < 1.0  # routing is not trivial
            assert past_diff < 1e-5, "causal routing: a future token changed a past logit"
        else:  # documented: top-k over the sequence leaks the future (never report its perplexity)
            assert past_diff > 1e-3, "top-k routing was expected to be non-causal"


def test_train_step_with_mod_trains_the_router_through_the_lm_loss_and_logs_router_stats():
    """With the predictor, the router's BCE is off: its only gradient is through the gate
    multiplying Delta (top-k itself has none), so a router update proves the LM loss reaches it."""
    model, _ = tiny_model(**MOD, router=dict(causal="predictor"))
    tx = optax.adam(1e-2)
    state = init_state(model, tx, jax.random.key(0), 16)
    tokens = _tokens()
    batch = {
        "inputs": tokens,
        "targets": jnp.roll(tokens, -1, 1),
        "positions": positions_for(tokens),
        "segment_ids": jnp.ones_like(tokens),
        "weights": jnp.ones(tokens.shape),
        "num_bytes": jnp.ones(tokens.shape, jnp.int32),
    }
    new_state, metrics = jax.jit(make_train_step(model, tx))(state, batch, jax.random.key(1))
    assert {"aux/mod_predictor_bce", "model/mod/layer1/selected", "model/mod/layer1/causal_acc"} <= set(
        metrics
    )
    np.testing.assert_allclose(metrics["model/mod/layer1/selected"], 0.25)
    old, new = state.params["layers_1"], new_state.params["layers_1"]
    for name in ("router", "predictor"):  # both learn (the predictor only through its BCE)
        assert not np.allclose(
            old[name]["w" if name == "router" else "w1"].value,
            new[name]["w" if name == "router" else "w1"].value,
        )


def test_string_scales_skipped_tokens_by_their_gate():
    cfg = tiny_cfg(mod=dict(pattern="mod", capacity=0.25, gate="tanhnorm", string=True))
    mod = MoDBlock(cfg, 0.25, Block)
    h = jax.random.normal(jax.random.key(0), (1, 8, TINY["d_model"]))
    pos, mask, valid = positions_for(h[..., 0]), jnp.tril(jnp.ones((1, 8, 8), bool)), jnp.ones((1, 8), bool)
    params = mod.init(jax.random.key(1), h, pos, mask, None, valid)
    params = jax.tree.map(lambda x: x + 0.1, params)  # a non-zero router: gates != 1
    out, _, selected, _ = mod.apply(params, h, pos, mask, None, valid)
    w = params["params"]["router"]["w"].value[:, 0]
    gate = 0.2 * jnp.tanh(h[0] @ w + params["params"]["router"]["b"].value[0]) + 1.0
    skipped = ~np.asarray(selected[0])
    assert skipped.sum() == 6
    np.testing.assert_allclose(out[0][skipped], (gate[:, None] * h[0])[skipped], rtol=1e-5)


@pytest.mark.parametrize(
    "overrides", [MOD, dict(mod=dict(pattern="mod", capacity=0.5), router=dict(causal="predictor"))]
)
def test_prefill_then_single_steps_equal_the_full_causal_forward(overrides):
    model, params = tiny_model(**overrides)
    params = _scale_routers(params, 100.0)
    tokens = _tokens(b=2, t=12)
    full, aux_full = model.apply(params, tokens, positions_for(tokens), routing="causal")
    cache, step = assert_cached_decoding_matches(model, params, tokens, [5] + [1] * 7, full, max_len=16)
    assert step._cache_size() == 2  # static shapes: one compile for the prompt, one for every step
    # Routed layers hold only the tokens that took them; dense layers hold all 12.
    lengths = np.asarray(cache.length)
    for layer, cap in enumerate(model.cfg.layer_capacities):
        assert (lengths[layer] == 12).all() if cap is None else (lengths[layer] < 12).any()


def test_topk_training_forward_compiles_once_for_different_inputs():
    model, params = tiny_model(**MOD)
    f = jax.jit(lambda p, t: model.apply(p, t, positions_for(t))[0])
    f(params, _tokens(seed=1))
    f(params, _tokens(seed=2))
    assert f._cache_size() == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {**MOD, "mod.gate": "tanhnorm", "router.causal": "predictor"},
        dict(n_layers=4, router=dict(causal="predictor"), mor=dict(sharing="middle_cycle", recursions=2)),
        dict(n_layers=4, mor=dict(sharing="cycle", recursions=2, router="token")),
    ],
)
def test_param_count_matches_the_param_tree(overrides):
    model, params = tiny_model(**overrides)
    assert param_count(model.cfg) == sum(x.size for x in jax.tree.leaves(params))


def test_flops_per_token_matches_xla_cost_analysis_of_the_routed_forward():
    """XLA's FLOP count of the compiled top-k forward (gathered k x k attention scores, unmasked)
    matches the analytic count: the routed layers really cost k / T of a dense one."""
    model, params = tiny_model(d_model=128, d_ff=256, **MOD)
    cfg, t = model.cfg, 64
    tokens = jnp.zeros((1, t), jnp.int32)
    cost = (
        jax.jit(lambda p: model.apply(p, tokens, positions_for(tokens))[0])
        .lower(params)
        .compile()
        .cost_analysis()
    )
    cost = cost[0] if isinstance(cost, list) else cost
    per_key = 4 * cfg.n_heads * cfg.resolved_head_dim
    k = 16  # floor(0.25 * 64)
    unmasked = per_key * ((t - (t + 1) / 2) + (k / t) * (k - (k + 1) / 2))  # dense + routed layer
    expected = flops_per_token(cfg, t, training=False) + unmasked
    assert abs(cost["flops"] / t - expected) / expected < 0.05, (cost["flops"] / t, expected)
    dense = tiny_cfg(d_model=128, d_ff=256)
    assert flops_per_token(cfg, t) < 0.7 * flops_per_token(dense, t)
