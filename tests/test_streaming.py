"""Attention-sink streaming caches: dense while they fit, exact sliding recompute after many wraps,
constant memory in engine generation past the training length."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import ModelStep, commit_block, generate, init_cache
from rocket.decode.methods.streaming import StreamingAR, StreamPolicy, new_stream, stream_logits
from tests.helpers import positions_for, tiny_model

S_SINKS, WINDOW = 3, 6


@pytest.fixture(scope="module")
def target():
    model, params = tiny_model(max_seq_len=16)
    return ModelStep(model, params)


def _tokens(b: int, n: int, seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (b, n), 2, 258)


@pytest.mark.parametrize("policy", ["sinks", "lm_infinite"])
def test_streaming_equals_the_dense_model_while_everything_fits(target, policy):
    stream = StreamPolicy(S_SINKS, WINDOW, policy, max_distance=12)
    tokens = _tokens(2, stream.size)
    dense = target(tokens, positions_for(tokens), target.new_cache(2, stream.size)).logits  # plain cache
    for chunk in (1, 3):
        got = jax.jit(stream_logits, static_argnums=(2, 3))(target, tokens, stream, chunk)
        np.testing.assert_allclose(got, dense, atol=2e-5, rtol=1e-5)


def _reference_logits(target: ModelStep, tokens_n: np.ndarray, stream: StreamPolicy) -> np.ndarray:
    """The same streaming semantics without a ring: an ordinary cache keeps every token (pre-RoPE keys,
    slot t = token t) and evicted tokens are hidden through their position; ranks are recomputed
    from scratch for every query: kept tokens renumbered 0.. (StreamingLLM) or with true distances
    and sink distances clamped to max_distance (LM-Infinite)."""
    s, w, n = stream.n_sinks, stream.window, len(tokens_n)
    cfg = target.module.cfg
    cache = init_cache(cfg.cache_layers, 1, n, cfg.n_kv_heads, cfg.resolved_head_dim).replace(
        rope_at_read=True
    )
    step = jax.jit(lambda tok, q, c: target(tok, q, c))
    logits = []
    for t in range(n):
        kept = list(range(min(s, t))) + list(range(max(s, t - w), t))
        if stream.policy == "sinks":
            rank = {p: i for i, p in enumerate(kept)}
            q = len(kept)
        else:  # true relative distances, shifted so the oldest ring token sits at rank s
            shift = max(s, t - w) - s
            q = t - shift
            rank = {p: (q - min(t - p, stream.max_distance) if p < s else p - shift) for p in kept}
        pos = np.full((1, n), 10**6, np.int32)  # evicted / empty: never visible
        for p, r in rank.items():
            pos[0, p] = r
        view = cache.replace(slot_pos=jnp.broadcast_to(jnp.asarray(pos), cache.slot_pos.shape))
        out = step(jnp.asarray(tokens_n[t : t + 1])[None], jnp.array([[q]], jnp.int32), view)
        logits.append(np.asarray(out.logits[0, 0]))
        block = out.new_kv.replace(positions=jnp.array([[t]], jnp.int32))
        cache = commit_block(cache, block, 1)  # keeps rope_at_read
    return np.stack(logits)


@pytest.mark.parametrize("policy", ["sinks", "lm_infinite"])
def test_ring_after_many_wraps_equals_sliding_window_recomputation(target, policy):
    stream = StreamPolicy(S_SINKS, WINDOW, policy, max_distance=12)
    n = 8 * stream.size
    tokens = _tokens(1, n, seed=1)
    got = jax.jit(stream_logits, static_argnums=(2, 3))(target, tokens, stream, 1)
    want = _reference_logits(target, np.asarray(tokens[0]), stream)
    np.testing.assert_allclose(got[0], want, atol=5e-5, rtol=1e-4)
    # The sinks matter: the same stream without them differs once tokens are evicted.
    no_sinks = StreamPolicy(0, stream.size, "sinks")
    other = jax.jit(stream_logits, static_argnums=(2, 3))(target, tokens, no_sinks, 1)
    np.testing.assert_allclose(other[0, : stream.size], got[0, : stream.size], atol=5e-5, rtol=1e-4)
    assert np.abs(np.asarray(other[0, stream.size + 1 :] - got[0, stream.size + 1 :])).max() > 1e-3


def test_streaming_generation_past_the_training_length_with_constant_memory(target):
    stream = StreamPolicy(S_SINKS, WINDOW)
    method = StreamingAR(stream)
    prompt = _tokens(2, 5, seed=2)
    prompt_len = jnp.array([5, 3])
    max_new = 8 * stream.size  # 72 tokens from a model with max_seq_len = 16 and a 9-slot cache
    out = generate(target, prompt, prompt_len, jax.random.key(0), max_new_tokens=max_new, method=method)
    assert out.tokens.shape == (2, max_new) and np.all(np.asarray(out.n_tokens) == max_new)
    # Greedy tokens are the argmax of the teacher-forced streaming logits of the emitted stream.
    for row in range(2):
        plen = int(prompt_len[row])
        full = jnp.concatenate([prompt[row, :plen], out.tokens[row]])[None]
        logits = jax.jit(stream_logits, static_argnums=(2, 3))(target, full, stream, 1)
        np.testing.assert_array_equal(np.argmax(logits[0, plen - 1 : -1], -1), out.tokens[row])
    # The method's state has the same (cache-sized) shapes whatever the generation length.
    ctx_shapes = [
        jax.eval_shape(lambda: new_stream(target, 2, stream)).cache.k.shape,
        (target.module.cfg.cache_layers, 2, stream.size, 2, 16),
    ]
    assert ctx_shapes[0] == ctx_shapes[1]
    with pytest.raises(ValueError, match="max_seq_len"):  # a plain cache cannot go that far
        generate(target, prompt, prompt_len, jax.random.key(0), max_new_tokens=max_new)


def test_streaming_config_errors():
    with pytest.raises(ValueError, match="max_distance"):
        StreamPolicy(4, 8, "lm_infinite")
    with pytest.raises(ValueError, match="policy"):
        StreamPolicy(4, 8, "window")
