"""Contrastive search on the shared engine: greedy limits, a naive full-forward reference, the cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import ModelStep, generate
from rocket.decode.engine import Ctx
from rocket.decode.methods.contrastive import ContrastiveSearch, degeneration_penalty
from rocket.decode.sampling import SamplerConfig
from tests.helpers import positions_for, tiny_model

PROMPT = jnp.array([[5, 9, 5, 9, 5, 0], [7, 3, 8, 1, 6, 4]])
PROMPT_LEN = jnp.array([5, 6])
N_NEW = 12


@pytest.fixture(scope="module")
def target():
    model, params = tiny_model()
    return ModelStep(model, params)


def _run(target, method, n=N_NEW):
    return generate(target, PROMPT, PROMPT_LEN, jax.random.key(0), max_new_tokens=n, method=method)


def test_alpha_zero_and_k_one_are_greedy(target):
    greedy = _run(target, "ar").tokens
    np.testing.assert_array_equal(_run(target, ContrastiveSearch(top_k=4, alpha=0.0)).tokens, greedy)
    np.testing.assert_array_equal(_run(target, ContrastiveSearch(top_k=1, alpha=0.6)).tokens, greedy)


def test_matches_a_naive_full_forward_reference(target):
    """Every step recomputed from scratch: candidates' hidden states by full forwards of prefix + v."""
    k, alpha = 3, 0.6
    got = np.asarray(_run(target, ContrastiveSearch(top_k=k, alpha=alpha)).tokens)
    width = PROMPT.shape[1] + N_NEW + 1
    fwd = jax.jit(lambda t: target.module.apply(target.variables, t, positions_for(t)))
    for row in range(2):
        seq = list(np.asarray(PROMPT[row, : PROMPT_LEN[row]]))
        for step in range(N_NEW):
            n = len(seq)
            batch = np.zeros((k + 1, width), np.int32)
            batch[:, :n] = seq
            logits, aux = fwd(jnp.asarray(batch))
            probs = jax.nn.softmax(logits[0, n - 1])
            p_k, cand = jax.lax.top_k(probs, k)
            batch[1:, n] = np.asarray(cand)
            _, aux_c = fwd(jnp.asarray(batch))
            ctx = aux["hidden"][0, :n]
            cos = lambda a, b: (
                a @ b.T / (np.linalg.norm(a, axis=-1)[:, None] * np.linalg.norm(b, axis=-1)[None])
            )
            sim = np.max(cos(np.asarray(aux_c["hidden"][1:, n]), np.asarray(ctx)), axis=1)
            score = (1 - alpha) * np.asarray(p_k) - alpha * sim
            seq.append(int(cand[int(np.argmax(score))]))
            assert got[row, step] == seq[-1], (row, step)


def test_cache_equals_a_fresh_forward_on_the_output(target):
    method = ContrastiveSearch(top_k=3, alpha=0.6)
    max_len = PROMPT.shape[1] + N_NEW + method.block_width
    ctx = Ctx(target, None, SamplerConfig(greedy=True), SamplerConfig(greedy=True), max_len)
    state = jax.jit(lambda: method.init(ctx, PROMPT, PROMPT_LEN, jax.random.key(0), None))()
    round_fn = jax.jit(lambda s: method.round(ctx, s, jax.random.key(0), jnp.array([True, True])))
    toks = []
    for _ in range(5):
        out = round_fn(state)
        state = out.state
        toks.append(out.tokens[:, 0])
    toks = np.stack(toks, 1)
    fwd = jax.jit(lambda t: target(t, positions_for(t), target.new_cache(1, t.shape[1])))
    for row in range(2):
        seq = np.concatenate([np.asarray(PROMPT[row, : PROMPT_LEN[row]]), toks[row]])[None]
        n = seq.shape[1]
        fresh = fwd(jnp.asarray(seq))
        assert int(state.length[row]) == n and np.all(np.asarray(state.cache.length[:, row]) == n)
        np.testing.assert_allclose(state.cache.k[:, row, :n], fresh.new_kv.k[:, 0], atol=1e-5)
        np.testing.assert_allclose(state.cache.v[:, row, :n], fresh.new_kv.v[:, 0], atol=1e-5)
        np.testing.assert_array_equal(state.cache.slot_pos[:, row, :n], np.broadcast_to(np.arange(n), (2, n)))
        np.testing.assert_allclose(state.logits[row], fresh.logits[0, -1], atol=1e-4)
        h = np.asarray(fresh.hidden[0])
        np.testing.assert_allclose(
            state.context[row, :n], h / np.linalg.norm(h, axis=-1, keepdims=True), atol=1e-5
        )


def test_degeneration_penalty_is_a_masked_max_cosine():
    key1, key2 = jax.random.split(jax.random.key(0))
    cand = jax.random.normal(key1, (2, 3, 8))
    context = jax.random.normal(key2, (2, 5, 8))
    context = context / jnp.linalg.norm(context, axis=-1, keepdims=True)
    length = jnp.array([2, 5])
    got = degeneration_penalty(cand, context, length)
    # Slots past `length` never count, even if they would win the max.
    poisoned = context.at[0, 2:].set(cand[0, 0] / jnp.linalg.norm(cand[0, 0]))
    np.testing.assert_allclose(degeneration_penalty(cand, poisoned, length), got, atol=1e-6)
    np.testing.assert_allclose(degeneration_penalty(7.0 * cand, context, length), got, atol=1e-6)  # cosine
    want = np.max(
        np.einsum("kd,sd->ks", cand[1] / np.linalg.norm(cand[1], axis=-1, keepdims=True), context[1]), -1
    )
    np.testing.assert_allclose(got[1], want, atol=1e-6)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="top_k"):
        ContrastiveSearch(top_k=0)
    with pytest.raises(ValueError, match="alpha"):
        ContrastiveSearch(alpha=1.5)
