"""Properties of the dense decoder: causality, packing isolation, cache consistency, accounting."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.config import ModelConfig
from rocket.decode import commit_block, new_cache
from rocket.models import Transformer, flops_per_token, param_count
from tests.helpers import TINY, assert_cached_decoding_matches, positions_for, tiny_model

VARIANTS = [
    dict(),
    dict(scan_layers=True),
    dict(scan_layers=True, remat="full"),
    dict(tie_embeddings=False, n_kv_heads=1),
]


def _tokens(b=2, t=24, seed=1):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, TINY["vocab_size"])


@pytest.mark.parametrize("overrides", VARIANTS)
def test_causality_future_tokens_never_change_past_logits(overrides):
    model, params = tiny_model(**overrides)
    tokens = _tokens()
    logits, _ = model.apply(params, tokens, positions_for(tokens))
    cut = 10
    changed = tokens.at[:, cut:].set((tokens[:, cut:] + 7) % TINY["vocab_size"])
    logits2, _ = model.apply(params, changed, positions_for(changed))
    chex.assert_trees_all_close(logits[:, :cut], logits2[:, :cut], atol=1e-6)
    assert float(jnp.abs(logits[:, cut:] - logits2[:, cut:]).max()) > 1e-3  # the future does change


def test_causality_by_gradient():
    """d logits[t] / d embedding(token s) == 0 for every s > t (nanodo's gradient test).

    Untied, so the embedding table feeds only the input lookup, not the logits."""
    model, params = tiny_model(tie_embeddings=False)
    tokens = _tokens(b=1, t=12)
    t_query = 5

    def logit_at(table):
        p = jax.tree.map(lambda x: x, params)
        p["params"]["embed"]["embedding"] = p["params"]["embed"]["embedding"].replace_boxed(table)
        return model.apply(p, tokens, positions_for(tokens))[0][0, t_query].sum()

    g = jax.grad(logit_at)(params["params"]["embed"]["embedding"].value)  # [V, D]
    future_ids = set(np.asarray(tokens[0, t_query + 1 :]).tolist()) - set(
        np.asarray(tokens[0, : t_query + 1]).tolist()
    )
    assert future_ids, "test needs a token that appears only in the future"
    for i in future_ids:
        assert float(jnp.abs(g[i]).max()) == 0.0
    assert float(jnp.abs(g[int(tokens[0, t_query])]).max()) > 0.0  # the present does matter


def test_packed_documents_do_not_see_each_other():
    model, params = tiny_model()
    tokens = _tokens(b=1, t=20)
    seg = jnp.array([[1] * 8 + [2] * 12])
    pos = jnp.array([list(range(8)) + list(range(12))])
    logits, _ = model.apply(params, tokens, pos, segment_ids=seg)
    # Changing document 1 leaves document 2's logits untouched ...
    other = tokens.at[:, :8].set((tokens[:, :8] + 3) % TINY["vocab_size"])
    logits2, _ = model.apply(params, other, pos, segment_ids=seg)
    chex.assert_trees_all_close(logits[:, 8:], logits2[:, 8:], atol=1e-6)
    # ... and document 2 packed after document 1 equals document 2 alone.
    alone, _ = model.apply(params, tokens[:, 8:], pos[:, 8:])
    chex.assert_trees_all_close(logits[:, 8:], alone, atol=1e-5)


@pytest.mark.parametrize("overrides", [dict(), dict(scan_layers=True)])
def test_prefill_plus_steps_equals_full_forward(overrides):
    model, params = tiny_model(**overrides)
    tokens = _tokens(b=2, t=16)
    full, _ = model.apply(params, tokens, positions_for(tokens))
    # a prompt, 1-token steps and multi-token blocks
    assert_cached_decoding_matches(model, params, tokens, [6, 1, 3, 1, 5], full, max_len=32, atol=2e-5)


def test_scan_and_loop_compute_the_same_function():
    model_a, params_a = tiny_model()
    model_b, params_b = tiny_model(scan_layers=True)
    # Restack the loop's per-layer params into the scan layout.
    pa = jax.tree.map(lambda x: x, params_a["params"])
    layers = [pa.pop(f"layers_{i}") for i in range(TINY["n_layers"])]
    stacked = jax.tree.map(
        lambda *xs: jnp.stack([x.value for x in xs]), *layers, is_leaf=lambda x: hasattr(x, "value")
    )
    pb = {**{k: v.value if hasattr(v, "value") else v for k, v in pa.items()}, "layers": stacked}
    pb = jax.tree.map(
        lambda x: x.value if hasattr(x, "value") else x, pb, is_leaf=lambda x: hasattr(x, "value")
    )
    tokens = _tokens()
    la, _ = model_a.apply(params_a, tokens, positions_for(tokens))
    lb, _ = model_b.apply({"params": pb}, tokens, positions_for(tokens))
    chex.assert_trees_all_close(la, lb, atol=1e-5)


def test_bf16_compute_is_close_to_f32_and_params_stay_f32():
    model, params = tiny_model()
    model16 = Transformer(ModelConfig(**{**TINY, "dtype": "bfloat16"}))
    tokens = _tokens()
    l32, _ = model.apply(params, tokens, positions_for(tokens))
    l16, aux = model16.apply(params, tokens, positions_for(tokens))
    assert l16.dtype == jnp.float32 and aux["hidden"].dtype == jnp.bfloat16
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    p32, p16 = jax.nn.softmax(l32), jax.nn.softmax(l16)
    assert float(jnp.abs(p32 - p16).max()) < 0.02


@pytest.mark.parametrize("overrides", [dict(), dict(tie_embeddings=False), dict(n_kv_heads=4, d_ff=96)])
def test_param_count_matches_the_param_tree(overrides):
    model, params = tiny_model(**overrides)
    assert param_count(model.cfg) == sum(x.size for x in jax.tree.leaves(params))


def test_flops_per_token_by_hand():
    cfg = ModelConfig(vocab_size=100, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=16, max_seq_len=16)
    matmuls = 8 * 4 * (2 + 2) + 2 * 4 * 8 + 3 * 8 * 16 + 100 * 8  # q,k,v; o; mlp; head
    attn = 2 * 2 * 1 * 2 * 4 * (9 + 1) / 2
    assert flops_per_token(cfg, 9, training=False) == 2 * matmuls + attn
    assert flops_per_token(cfg, 9) == 3 * (2 * matmuls + attn)


def test_input_errors_name_the_problem():
    model, params = tiny_model()
    tokens = jnp.zeros((1, 129), jnp.int32)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.apply(params, tokens, positions_for(tokens))
    with pytest.raises(ValueError, match="positions"):
        model.apply(params, tokens[:, :4], jnp.zeros((1, 5), jnp.int32))


def test_tree_block_mask_scores_each_branch_as_its_own_sequence():
    """A block [root, a, b] with siblings a, b (same position, ancestor mask) against a cached prefix
    gives each node the logits of its own root-to-node path run sequentially."""
    model, params = tiny_model()
    prefix = _tokens(b=1, t=5)
    root, a, b = 11, 22, 33
    cache = new_cache(model, 1, 16)
    _, aux = model.apply(params, prefix, positions_for(prefix), cache=cache)
    cache = commit_block(cache, aux["new_kv"], 5)
    block = jnp.array([[root, a, b]])
    ancestors = jnp.array([[[1, 0, 0], [1, 1, 0], [1, 0, 1]]], bool)
    logits, _ = model.apply(params, block, jnp.array([[5, 6, 6]]), cache=cache, block_mask=ancestors)
    for node, path in ((1, [root, a]), (2, [root, b])):
        seq = jnp.concatenate([prefix, jnp.array([path])], axis=1)
        ref, _ = model.apply(params, seq, positions_for(seq))
        chex.assert_trees_all_close(logits[0, node], ref[0, -1], atol=2e-5)


@pytest.mark.parametrize("remat", ["full", "dots", "dots_no_batch"])
def test_remat_policies_leave_gradients_unchanged(remat):
    model, params = tiny_model(scan_layers=True)
    model_r = Transformer(ModelConfig(**{**TINY, "scan_layers": True, "remat": remat}))
    tokens = _tokens(b=2, t=16)

    def loss(m, p):
        return jnp.mean(jax.nn.log_softmax(m.apply(p, tokens, positions_for(tokens))[0]) ** 2)

    chex.assert_trees_all_close(
        jax.grad(lambda p: loss(model_r, p))(params), jax.grad(lambda p: loss(model, p))(params), atol=1e-6
    )


def test_flops_per_token_matches_xla_cost_analysis():
    """XLA's count of the compiled forward pass (full T x T attention scores, as XLA computes them
    before masking) agrees with the analytic count once the causal discount is undone."""
    cfg = ModelConfig(**{**TINY, "d_model": 128, "d_ff": 256})
    model, params = tiny_model(d_model=128, d_ff=256)
    t = 64
    tokens = jnp.zeros((1, t), jnp.int32)
    cost = (
        jax.jit(lambda p: model.apply(p, tokens, positions_for(tokens))[0])
        .lower(params)
        .compile()
        .cost_analysis()
    )
    cost = cost[0] if isinstance(cost, list) else cost
    attn_causal = 4 * cfg.n_layers * cfg.n_heads * cfg.resolved_head_dim * (t + 1) / 2
    attn_full = 4 * cfg.n_layers * cfg.n_heads * cfg.resolved_head_dim * t
    expected = flops_per_token(cfg, t, training=False) - attn_causal + attn_full
    assert abs(cost["flops"] / t - expected) / expected < 0.05, (cost["flops"] / t, expected)
