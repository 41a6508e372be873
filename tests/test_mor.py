"""Mixture-of-Recursions: recursion/sharing semantics, nested expert-choice subsets, the official
gate placement, causality, cache consistency and router gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import new_cache
from rocket.models.mor import RecursiveStack
from rocket.models.transformer import Block, Transformer
from rocket.train.step import per_token_loss
from tests.helpers import TINY, assert_cached_decoding_matches, positions_for, tiny_cfg, tiny_model

EC = dict(n_layers=5, mor=dict(sharing="middle_cycle", recursions=3))  # 1 + (1 x 3) + 1 applications
TC = dict(n_layers=4, mor=dict(sharing="cycle", recursions=2, router="token", z_loss_coef=1e-5))


def _tokens(b=2, t=12, seed=1):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, TINY["vocab_size"])


def test_plain_recursion_shares_the_layers():
    """Cycle sharing without a router: N_r = 1 is the dense model, N_r = 2 applies it twice."""
    model, params = tiny_model(n_layers=2, mor=dict(sharing="cycle", recursions=1, router="none"))
    dense, _ = tiny_model(n_layers=2)
    p = dict(params["params"])
    shared = p.pop("mor")
    dense_params = {"params": {**p, "layers_0": shared["shared_0"], "layers_1": shared["shared_1"]}}
    tokens = _tokens()
    np.testing.assert_array_equal(
        model.apply(params, tokens, positions_for(tokens))[0],
        dense.apply(dense_params, tokens, positions_for(tokens))[0],
    )
    twice, _ = tiny_model(n_layers=4, mor=dict(sharing="cycle", recursions=2, router="none"))
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
    cfg = tiny_cfg(n_layers=1, mor=dict(sharing="cycle", recursions=1, temp=2.0))
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
    cache, _ = assert_cached_decoding_matches(model, params, tokens, [4] + [1] * 8, full, max_len=12)
    lengths = np.asarray(cache.length)  # recursion-wise caches: deeper recursions hold fewer tokens
    assert (lengths[0] == 12).all() and (lengths[-1] <= lengths[0]).all() and (lengths < 12).any()


@pytest.mark.parametrize("overrides", [{**EC, "n_layers": 4, "mor.recursions": 2}, TC])
def test_routers_get_gradient_from_the_language_model_loss(overrides):
    model, params = tiny_model(
        **{**overrides, "mor.aux_coef": 0.0, "mor.balance_coef": 0.0, "mor.z_loss_coef": 0.0}
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


# --- recursive KV sharing (mor_kv="share") ---
SHARE_EC = {**EC, "mor.kv": "share"}  # cache: first, shared_0 (recursion 0), last
SHARE_TC = {**TC, "mor.kv": "share"}  # cache: shared_0, shared_1 (recursion 0)


@pytest.mark.parametrize("kind", ["softmax", "softplus"])
def test_attention_on_its_own_shared_kv_is_the_default_path(kind):
    """The opt-in changes only where K/V come from: fed the K/V it computed itself, it is unchanged."""
    from rocket.layers.attention import Attention

    attn = Attention(4, 2, 8, 10_000.0, kind=kind)
    x = jax.random.normal(jax.random.key(0), (2, 6, 16))
    pos, mask = positions_for(x[..., 0]), jnp.tril(jnp.ones((2, 6, 6), bool))
    params = attn.init(jax.random.key(1), x, pos, mask)
    y, (k, v) = attn.apply(params, x, pos, mask)
    y_shared, kv_shared = attn.apply(params, x, pos, mask, None, (k, v, pos))
    np.testing.assert_allclose(y_shared, y, rtol=1e-6, atol=1e-6)
    assert kv_shared[0] is k and kv_shared[1] is v
    y_rows, _ = attn.apply(params, x[:, 2:4], pos[:, 2:4], mask[:, 2:4], None, (k, v, pos))  # gathered q
    np.testing.assert_allclose(y_rows, y[:, 2:4], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("overrides", [SHARE_EC, SHARE_TC])
def test_kv_sharing_is_causal_and_prefill_plus_steps_match_the_full_forward(overrides):
    model, params = tiny_model(**overrides)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 200.0 if "router" in jax.tree_util.keystr(path) else x, params
    )
    tokens, p, n = _tokens(t=12), 4, model.cfg.cache_layers
    apply = jax.jit(lambda t: model.apply(params, t, positions_for(t), routing="causal")[0])
    full = apply(tokens)
    changed = apply(tokens.at[:, 6:].set((tokens[:, 6:] * 7 + 1) % TINY["vocab_size"]))
    chex.assert_trees_all_close(full[:, :6], changed[:, :6], atol=1e-5)
    assert np.abs(np.asarray(full[:, 6:] - changed[:, 6:])).max() > 1e-3  # the test can fail
    _, aux = model.apply(params, tokens[:, :p], positions_for(tokens)[:, :p], cache=new_cache(model, 2, 12))
    assert n == (3 if overrides is SHARE_EC else 2)
    assert aux["new_kv"].k.shape[0] == n and aux["new_kv"].valid.shape[0] == n
    cache, _ = assert_cached_decoding_matches(model, params, tokens, [p] + [1] * 8, full, max_len=12)
    assert cache.k.shape[0] == n
    np.testing.assert_array_equal(cache.length, 12)  # recursion 0 runs every token: every layer is full


def test_kv_sharing_keeps_the_parameters_and_skips_kv_projections_in_flops():
    from rocket.models.accounting import flops_per_token, param_count

    plain = dict(n_layers=4, mor=dict(sharing="cycle", recursions=2, router="none"))
    share_model, share_params = tiny_model(**plain, **{"mor.kv": "share"})
    rec_model, rec_params = tiny_model(**plain)
    chex.assert_trees_all_equal_shapes(share_params, rec_params)
    assert param_count(share_model.cfg) == param_count(rec_model.cfg)
    assert (rec_model.cfg.cache_layers, share_model.cfg.cache_layers) == (4, 2)
    # plain recursion: every token at every recursion, so only the K/V projections of the
    # (N_r - 1) m = 2 shared-KV applications go: 3 (train) x 2 (FLOPs per MAC) x 2 x D x H_kv D_h each
    d, hkv = TINY["d_model"], TINY["n_kv_heads"] * share_model.cfg.resolved_head_dim
    saved = flops_per_token(rec_model.cfg, 64) - flops_per_token(share_model.cfg, 64)
    np.testing.assert_allclose(saved, 2 * 3 * 2 * 2 * d * hkv)
    # expert-choice: the k_r queries see all T keys (attention x k_r / T instead of (k_r / T)^2)
    ec_rec, ec_share = tiny_cfg(**EC), tiny_cfg(**SHARE_EC)
    per_key = 2 * 2 * TINY["n_heads"] * ec_rec.resolved_head_dim
    expected = sum(  # recursions 1, 2 of 64 tokens: k = 42, 21
        (k / 64) * (2 * 2 * d * hkv + per_key * ((k + 1) / 2 - 65 / 2)) for k in (42, 21)
    )
    saved = flops_per_token(ec_rec, 64, training=False) - flops_per_token(ec_share, 64, training=False)
    np.testing.assert_allclose(saved, expected)


def test_kv_sharing_changes_the_model_and_bad_values_are_rejected():
    from rocket.config import ConfigError

    model, params = tiny_model(**EC)
    share = Transformer(tiny_cfg(**SHARE_EC))
    tokens = _tokens()
    out = model.apply(params, tokens, positions_for(tokens))[0]
    out_share = share.apply(params, tokens, positions_for(tokens))[0]
    assert np.abs(np.asarray(out - out_share)).max() > 1e-4
    # top-k prefill into an empty cache (gathered queries against all keys): same logits, 3 full layers
    cached, aux = share.apply(params, tokens, positions_for(tokens), cache=new_cache(share, 2, 12))
    np.testing.assert_allclose(cached, out_share, rtol=1e-5, atol=1e-5)
    assert aux["new_kv"].k.shape[0] == 3 and np.asarray(aux["new_kv"].valid).all()
    with pytest.raises(ConfigError, match="'model.mor.kv'"):
        tiny_cfg(**EC, **{"mor.kv": "layer"})
