"""Mixture-of-Recursions: recursion/sharing semantics, nested expert-choice subsets, the official
gate placement, causality, cache consistency and router gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.config import ModelConfig
from rocket.decode import commit_block, new_cache
from rocket.models.mor import RecursiveStack
from rocket.models.transformer import Block
from rocket.train.step import per_token_loss
from tests.helpers import TINY, positions_for, tiny_model

EC = dict(n_layers=5, mor_sharing="middle_cycle", mor_recursions=3)  # 1 + (1 x 3) + 1 applications
TC = dict(n_layers=4, mor_sharing="cycle", mor_recursions=2, mor_router="token", mor_z_loss_coef=1e-5)


def _tokens(b=2, t=12, seed=1):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, TINY["vocab_size"])


def test_plain_recursion_shares_the_layers():
    """Cycle sharing without a router: N_r = 1 is the dense model, N_r = 2 applies it twice."""
    model, params = tiny_model(n_layers=2, mor_sharing="cycle", mor_recursions=1, mor_router="none")
    dense, _ = tiny_model(n_layers=2)
    p = dict(params["params"])
    shared = p.pop("mor")
    dense_params = {"params": {**p, "layers_0": shared["shared_0"], "layers_1": shared["shared_1"]}}
    tokens = _tokens()
    np.testing.assert_array_equal(
        model.apply(params, tokens, positions_for(tokens))[0],
        dense.apply(dense_params, tokens, positions_for(tokens))[0],
    )
    twice, _ = tiny_model(n_layers=4, mor_sharing="cycle", mor_recursions=2, mor_router="none")
    deep, _ = tiny_model(n_layers=4)
    deep_params = {
        "params": {**dense_params["params"], "layers_2": shared["shared_0"], "layers_3": shared["shared_1"]}
    }
    np.testing.assert_array_equal(
        twice.apply(params, tokens, positions_for(tokens))[0],
        deep.apply(deep_params, tokens, positions_for(tokens))[0],
    )


@pytest.mark.parametrize("routing", ["topk", "causal"])
def test_one_expert_choice_recursion_is_one_gated_application(routing):
    """Official placement: h <- h + alpha sigmoid(theta^T h / temp) Phi'(h), Phi' containing h."""
    cfg = ModelConfig(**{**TINY, "n_layers": 1}, mor_sharing="cycle", mor_recursions=1, mor_temp=2.0)
    stack = RecursiveStack(cfg, Block, routing)
    h = jax.random.normal(jax.random.key(0), (2, 8, TINY["d_model"]))
    pos, mask, valid = positions_for(h[..., 0]), jnp.tril(jnp.ones((2, 8, 8), bool)), jnp.ones((2, 8), bool)
    params = stack.init(jax.random.key(1), h, pos, mask, None, valid)["params"]
    out, _, _, _ = stack.apply({"params": params}, h, pos, mask, None, valid)
    block_out, _ = Block(cfg).apply({"params": params["shared_0"]}, h, pos, mask, None)
    gate = 0.1 * jax.nn.sigmoid((h / 2.0) @ params["router_0"]["w"].value)
    np.testing.assert_allclose(out, h + gate * block_out, rtol=1e-5, atol=1e-6)


def test_expert_choice_subsets_are_nested_with_capacities_of_full_length():
    model, params = tiny_model(**EC)
    tokens = _tokens(t=12)
    _, aux = jax.jit(model.apply)(params, tokens, positions_for(tokens), cache=new_cache(model, 2, 12))
    valid = np.asarray(aux["new_kv"].valid)  # [L=5, B, T]: first, rec 0, rec 1, rec 2, last
    assert valid[0].all() and valid[4].all() and valid[1].all()
    np.testing.assert_array_equal(valid[2].sum(-1), [8, 8])  # floor(2/3 * 12)
    np.testing.assert_array_equal(valid[3].sum(-1), [4, 4])  # floor(1/3 * 12)
    assert not (valid[3] & ~valid[2]).any() and not (valid[2] & ~valid[1]).any()  # nested
    assert set(aux["aux_losses"]) == {"mor_router_bce"}
    np.testing.assert_allclose(aux["metrics"]["mor/rec2/selected"], 1 / 3)


@pytest.mark.parametrize("overrides", [EC, TC])
def test_causal_mode_is_causal_and_matches_prefill_plus_steps(overrides):
    model, params = tiny_model(**overrides)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 200.0 if "router" in jax.tree_util.keystr(path) else x, params
    )
    tokens = _tokens(t=12)
    apply = jax.jit(lambda t: model.apply(params, t, positions_for(t), routing="causal")[0])
    full = apply(tokens)
    changed = apply(tokens.at[:, 6:].set((tokens[:, 6:] * 7 + 1) % TINY["vocab_size"]))
    chex.assert_trees_all_close(full[:, :6], changed[:, :6], atol=1e-5)
    p = 4
    cache = new_cache(model, 2, 12)
    prompt_logits, aux = model.apply(
        params, tokens[:, :p], positions_for(tokens)[:, :p], cache=cache, routing="causal"
    )
    cache = commit_block(cache, aux["new_kv"], p)  # prefill
    chex.assert_trees_all_close(prompt_logits, full[:, :p], atol=1e-4)
    step = jax.jit(lambda c, tok, pos: model.apply(params, tok, pos, cache=c, routing="causal"))
    for i in range(p, 12):
        logits, aux = step(cache, tokens[:, i : i + 1], jnp.full((2, 1), i, jnp.int32))
        cache = commit_block(cache, aux["new_kv"], 1)
        chex.assert_trees_all_close(logits[:, 0], full[:, i], atol=1e-4)
    lengths = np.asarray(cache.length)  # recursion-wise caches: deeper recursions hold fewer tokens
    assert (lengths[0] == 12).all() and (lengths[-1] <= lengths[0]).all() and (lengths < 12).any()


@pytest.mark.parametrize("overrides", [dict(EC, n_layers=4, mor_recursions=2), TC])
def test_routers_get_gradient_from_the_language_model_loss(overrides):
    model, params = tiny_model(
        **{**overrides, "mor_aux_coef": 0.0, "mor_balance_coef": 0.0, "mor_z_loss_coef": 0.0}
    )
    tokens = _tokens()
    batch = {
        "inputs": tokens,
        "targets": jnp.roll(tokens, -1, 1),
        "positions": positions_for(tokens),
        "segment_ids": jnp.ones_like(tokens),
    }
    g = jax.jit(jax.grad(lambda p: jnp.mean(per_token_loss(model, p, batch)[0])))(params["params"])
    routers = [v["w"].value for k, v in g["mor"].items() if k.startswith("router")]
    assert routers and all(float(jnp.abs(w).max()) > 1e-7 for w in routers)
