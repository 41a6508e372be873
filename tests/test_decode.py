"""The shared cache, samplers and simple generation loop."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import (
    ModelStep,
    SamplerConfig,
    check_capacity,
    commit_block,
    commit_path,
    generate,
    init_cache,
    rollback,
    sample,
    warp,
)
from rocket.layers.cache import KVBlock
from tests.helpers import positions_for, tiny_model


def test_warp_top_k_and_top_p_keep_the_right_sets():
    logits = jnp.log(jnp.array([0.05, 0.4, 0.1, 0.3, 0.15]))
    p = warp(logits, SamplerConfig(top_k=2))
    np.testing.assert_allclose(p, [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0], atol=1e-6)
    p = warp(logits, SamplerConfig(top_p=0.7))  # 0.4 + 0.3 reaches 0.7: keep those two
    np.testing.assert_allclose(p, [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0], atol=1e-6)
    p = warp(logits, SamplerConfig(top_p=0.71))  # needs the 0.15 token too
    np.testing.assert_allclose(p, [0, 0.4 / 0.85, 0, 0.3 / 0.85, 0.15 / 0.85], atol=1e-6)
    p = warp(logits, SamplerConfig(temperature=0.5))
    np.testing.assert_allclose(p, jax.nn.softmax(2 * logits), atol=1e-6)


def test_sampling_matches_the_warped_distribution():
    logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
    keys = jax.random.split(jax.random.key(0), 20000)
    draws = jax.vmap(lambda k: sample(k, logits, SamplerConfig()))(keys)
    freq = np.bincount(np.asarray(draws), minlength=4) / len(keys)
    # 20k draws: standard error <= 0.0035, so 0.015 is > 4 sigma.
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.015)
    assert int(sample(keys[0], logits, SamplerConfig(greedy=True))) == 3


def test_sampler_config_rejects_bad_values():
    with pytest.raises(ValueError, match="temperature"):
        SamplerConfig(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplerConfig(top_p=1.5)


def test_commit_and_rollback_by_logical_position():
    cache = init_cache(n_layers=2, batch=2, max_len=8, n_kv_heads=1, head_dim=2)
    block = KVBlock(
        k=jnp.ones((2, 2, 3, 1, 2)), v=jnp.ones((2, 2, 3, 1, 2)), positions=jnp.array([[0, 1, 2], [0, 1, 2]])
    )
    cache = commit_block(cache, block, jnp.array([3, 2]))  # row 1 keeps only 2 of the 3
    np.testing.assert_array_equal(cache.length, [[3, 2], [3, 2]])
    np.testing.assert_array_equal(cache.slot_pos[0, 0, :4], [0, 1, 2, -1])
    cache = rollback(cache, jnp.array([1, 5]))
    np.testing.assert_array_equal(cache.length, [[1, 2], [1, 2]])
    visible = cache.layer(0).visible(jnp.array([[1], [2]]))  # [B, T=1, S]
    np.testing.assert_array_equal(visible[:, 0, :3], [[True, False, False], [True, True, False]])
    with pytest.raises(ValueError, match="slots"):
        check_capacity(cache, 9)


def test_commit_skips_invalid_tokens_per_layer_and_commits_tree_paths():
    cache = init_cache(n_layers=2, batch=1, max_len=8, n_kv_heads=1, head_dim=1)
    k = jnp.arange(4, dtype=jnp.float32).reshape(1, 1, 4, 1, 1) * jnp.ones((2, 1, 4, 1, 1))
    valid = jnp.array([[[True, True, True, True]], [[False, True, False, True]]])  # layer 1 skips 0, 2
    block = KVBlock(k=k, v=k, positions=jnp.array([[0, 1, 2, 3]]), valid=valid)
    cache = commit_block(cache, block, 3)  # token 3 is not accepted
    np.testing.assert_array_equal(cache.length, [[3], [1]])
    np.testing.assert_array_equal(cache.slot_pos[1, 0, :2], [1, -1])
    np.testing.assert_array_equal(cache.k[0, 0, :3, 0, 0], [0, 1, 2])
    # A tree block: root 0 (pos 3), children 1 and 2 (pos 4), grandchild 3 of node 2 (pos 5).
    tree = KVBlock(k=k + 10, v=k + 10, positions=jnp.array([[3, 4, 4, 5]]))
    cache = commit_path(cache, tree, jnp.array([[0, 2, 3]]), 2)  # accept root and node 2 only
    np.testing.assert_array_equal(cache.length, [[5], [3]])
    np.testing.assert_array_equal(cache.slot_pos[0, 0, :6], [0, 1, 2, 3, 4, -1])
    np.testing.assert_array_equal(cache.k[0, 0, 3:5, 0, 0], [10, 12])


def test_greedy_generation_continues_the_argmax_of_the_full_forward():
    model, params = tiny_model()
    prompt = jax.random.randint(jax.random.key(3), (2, 6), 0, 258)
    lengths = jnp.array([6, 4])  # row 1 is right-padded
    out = generate(ModelStep(model, params), prompt, lengths, jax.random.key(0), max_new_tokens=8).tokens
    for row, n in enumerate([6, 4]):
        seq = jnp.concatenate([prompt[row, :n], out[row]])[None]
        logits, _ = model.apply(params, seq, positions_for(seq))
        np.testing.assert_array_equal(jnp.argmax(logits[0, n - 1 : -1], -1), out[row])


def test_sampled_generation_is_reproducible_and_eos_stops_rows():
    model, params = tiny_model()
    prompt = jnp.full((3, 2), 5, jnp.int32)
    lengths = jnp.array([2, 2, 2])
    sampler = SamplerConfig(temperature=1.0, top_k=50)
    a = generate(
        ModelStep(model, params), prompt, lengths, jax.random.key(1), max_new_tokens=10, sampler=sampler
    ).tokens
    b = generate(
        ModelStep(model, params), prompt, lengths, jax.random.key(1), max_new_tokens=10, sampler=sampler
    ).tokens
    chex.assert_trees_all_equal(a, b)
    eos = int(a[0, 2])
    c = generate(
        ModelStep(model, params),
        prompt,
        lengths,
        jax.random.key(1),
        max_new_tokens=10,
        sampler=sampler,
        eos_id=eos,
    ).tokens
    row = np.asarray(c[0])
    first = int(np.argmax(row == eos))
    assert first <= 2 and (row[first:] == eos).all()


def test_top_k_1_sampling_is_greedy_and_generation_respects_max_seq_len():
    model, params = tiny_model()
    prompt = jax.random.randint(jax.random.key(4), (2, 5), 0, 258)
    lengths = jnp.array([5, 5])
    greedy = generate(ModelStep(model, params), prompt, lengths, jax.random.key(0), max_new_tokens=6).tokens
    top1 = generate(
        ModelStep(model, params),
        prompt,
        lengths,
        jax.random.key(7),
        max_new_tokens=6,
        sampler=SamplerConfig(temperature=2.0, top_k=1),
    ).tokens
    np.testing.assert_array_equal(top1, greedy)
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(ModelStep(model, params), prompt, lengths, jax.random.key(0), max_new_tokens=124)


def test_rollback_then_new_tokens_equals_a_fresh_run():
    """Commit a wrong continuation, roll it back, commit the right one: logits equal a fresh pass."""
    model, params = tiny_model()
    tokens = jax.random.randint(jax.random.key(5), (1, 12), 0, 258)
    wrong = (tokens + 1) % 258
    pos = positions_for(tokens)
    cache = init_cache(2, 1, 32, 2, 16)
    _, aux = model.apply(params, tokens[:, :6], pos[:, :6], cache=cache)
    cache = commit_block(cache, aux["new_kv"], 6)
    _, aux = model.apply(params, wrong[:, 6:9], pos[:, 6:9], cache=cache)
    cache = rollback(commit_block(cache, aux["new_kv"], 3), 6)
    logits, aux = model.apply(params, tokens[:, 6:], pos[:, 6:], cache=cache)
    full, _ = model.apply(params, tokens, pos)
    chex.assert_trees_all_close(logits, full[:, 6:], atol=2e-5)
