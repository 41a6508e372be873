"""The decoding engine on real (tiny) transformers: greedy equality, cache integrity, EOS, capacity.

Greedy equality: every lossless method reproduces target greedy decoding token for
token in f32, rows of different prompt lengths in one batch. Cache integrity: after every round the
target's and the draft's caches hold exactly the emitted prefix (the next step's logits equal a
fresh full forward). Token Recycling with a garbage adjacency matrix gives identical output.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import (
    Ctx,
    DySpec,
    ModelStep,
    SamplerConfig,
    Speculative,
    generate,
)
from tests.decode_toys import table_step
from tests.helpers import tiny_model

B, P, NEW = 6, 7, 16
TARGET = ModelStep(*tiny_model())
DRAFT = ModelStep(*tiny_model(n_layers=1))
PROMPT = jax.random.randint(jax.random.key(3), (B, P), 0, 258)
LENS = jnp.array([7, 3, 5, 1, 6, 7])


def _reference() -> np.ndarray:
    return np.asarray(generate(TARGET, PROMPT, LENS, jax.random.key(0), max_new_tokens=NEW).tokens)


def _full_logits(model: ModelStep, rows: list[np.ndarray]) -> np.ndarray:
    """Logits [B, V] at each row's last token from one full forward (no cache), padded to width 64."""
    width = 64
    toks = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        toks[i, : len(r)] = r
    pos = np.broadcast_to(np.arange(width, dtype=np.int32), toks.shape)
    logits, _ = model.module.apply(model.variables, jnp.asarray(toks), jnp.asarray(pos), routing="causal")
    return np.asarray(logits)[np.arange(len(rows)), [len(r) - 1 for r in rows]]


@pytest.mark.parametrize(
    "method,draft",
    [
        (Speculative(branching=(1, 1, 1)), TARGET),  # the target as its own draft: every draft accepted
        pytest.param(
            Speculative(branching=(2, 2, 1), sampling="without_replacement"), DRAFT, marks=pytest.mark.slow
        ),
    ],
    ids=["chain_self_draft", "rsd_tree"],
)
def test_speculative_greedy_equals_target_greedy(method, draft):
    out = generate(TARGET, PROMPT, LENS, jax.random.key(1), max_new_tokens=NEW, method=method, draft=draft)
    np.testing.assert_array_equal(out.tokens, _reference())
    calls, acc = np.asarray(out.stats.target_calls), np.asarray(out.stats.accepted)
    assert (calls + acc >= NEW).all() and (out.stats.draft_calls == 3 * out.stats.target_calls).all()
    tested = np.asarray(out.stats.tested)  # depths examined: accepted + one rejection per short round
    assert (acc <= tested).all() and (tested <= acc + calls).all()
    if draft is TARGET:  # self-drafting accepts every draft: gamma + 1 tokens per target call
        assert (calls <= -(-NEW // 4)).all()
        np.testing.assert_array_equal(tested, acc)  # no rejection: per-position acceptance 1


@pytest.mark.slow
def test_dyspec_greedy_equals_target_greedy():
    method = DySpec(widths=(3, 4, 4), max_children=3)
    out = generate(TARGET, PROMPT, LENS, jax.random.key(1), max_new_tokens=NEW, method=method, draft=DRAFT)
    np.testing.assert_array_equal(out.tokens, _reference())


def test_token_recycling_greedy_is_target_greedy_for_any_adjacency_matrix():
    ref, v = _reference(), TARGET.vocab_size
    garbage = jax.random.randint(jax.random.key(9), (v, 8), 0, v)
    cold = generate(
        TARGET,
        PROMPT,
        LENS,
        jax.random.key(1),
        max_new_tokens=NEW,
        method="token_recycling",
        carry=jnp.zeros((v, 8), jnp.int32),
    )
    for carry in (garbage, cold.carry):  # garbage M; hot start from the previous call's M
        out = generate(
            TARGET, PROMPT, LENS, jax.random.key(1), max_new_tokens=NEW, method="token_recycling", carry=carry
        )
        np.testing.assert_array_equal(out.tokens, ref)
    np.testing.assert_array_equal(cold.tokens, ref)
    assert (cold.stats.accepted >= 0).all() and (cold.stats.target_calls <= NEW).all()


def test_caches_hold_exactly_the_emitted_prefix_after_every_round():
    """Sampled tree speculation (rejections, full acceptances, 1- and 2-token draft pending blocks)."""
    method = Speculative(branching=(2, 1, 1), sampling="without_replacement")
    sampler = SamplerConfig(temperature=1.0)
    ctx = Ctx(TARGET, DRAFT, sampler, sampler, max_len=P + 40)
    state = method.init(ctx, PROMPT, LENS, jax.random.key(0), None)
    round_fn = jax.jit(lambda c, s, k, a: method.round(c, s, k, a))
    step = jax.jit(lambda m, t, p, c: m(t, p, c).logits)
    rows = [np.asarray(PROMPT[i, : int(LENS[i])]) for i in range(B)]
    seen_full, seen_partial = False, False
    for r in range(4):
        out = round_fn(ctx, state, jax.random.key(r), jnp.ones((B,), bool))
        state, n = out.state, np.asarray(out.n)
        rows = [np.concatenate([row, np.asarray(out.tokens[i, : n[i]])]) for i, row in enumerate(rows)]
        seen_full |= bool((n == 4).any())
        seen_partial |= bool((n < 4).any())
        np.testing.assert_array_equal(state.pos, [len(row) - 1 for row in rows])
        np.testing.assert_array_equal(state.pending, [row[-1] for row in rows])
        # The target cache (the staged path written): its next step (the pending token) equals the full forward.
        inc = step(TARGET, state.pending[:, None], state.pos[:, None], state.cache.read())[:, 0]
        np.testing.assert_allclose(inc, _full_logits(TARGET, rows), atol=2e-4)
        # The draft cache: its pending block (1 or 2 tokens) completes the prefix.
        n_pend = np.asarray(state.n_draft_pending)
        first = state.pos - state.n_draft_pending + 1
        dl = step(DRAFT, state.draft_pending, first[:, None] + jnp.arange(2), state.draft_cache.read())
        dl = np.asarray(dl)[np.arange(B), n_pend - 1]
        np.testing.assert_allclose(dl, _full_logits(DRAFT, rows), atol=2e-4)
    assert seen_full and seen_partial, "the test did not exercise both pending-block cases"


def test_eos_inside_an_accepted_block_ends_the_row():
    table = np.random.default_rng(0).normal(size=(40, 6, 6))
    model = table_step(table)
    prompt, lens = jnp.array([[1, 2], [3, 0]]), jnp.array([2, 1])
    ar = np.asarray(generate(model, prompt, lens, jax.random.key(0), max_new_tokens=30).tokens)
    eos = int(ar[0, 5])
    out = generate(
        model,
        prompt,
        lens,
        jax.random.key(0),
        max_new_tokens=30,
        method=Speculative(),
        draft=model,
        eos_id=eos,
    )
    for i in range(2):
        hits = np.flatnonzero(ar[i] == eos)
        stop = hits[0] + 1 if len(hits) else 30
        assert int(out.n_tokens[i]) == stop
        np.testing.assert_array_equal(out.tokens[i, :stop], ar[i, :stop])
        assert (np.asarray(out.tokens[i, stop:]) == eos).all()


def test_model_step_kwargs_reach_every_call():
    """A model with per-sequence randomness (rngs={"sample": key}, fixed for the generation): speculative
    decoding with it as its own draft still equals AR greedy, and the key changes the output."""
    table = np.random.default_rng(1).normal(size=(40, 6, 6))
    prompt, lens = jnp.array([[1, 2]]), jnp.array([2])
    run = lambda key, method, draft: (
        generate(
            table_step(table, rngs={"sample": key}),
            prompt,
            lens,
            jax.random.key(0),
            max_new_tokens=24,
            method=method,
            draft=table_step(table, rngs={"sample": key}) if draft else None,
        ).tokens
    )
    a = run(jax.random.key(5), "ar", False)
    np.testing.assert_array_equal(run(jax.random.key(5), Speculative(), True), a)
    assert (run(jax.random.key(6), "ar", False) != a).any()


def test_clear_errors_for_capacity_and_missing_draft():
    with pytest.raises(ValueError, match="KV cache has 20 slots"):
        generate(
            TARGET, PROMPT, LENS, jax.random.key(0), max_new_tokens=10, method="token_recycling", max_len=20
        )
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(TARGET, PROMPT, LENS, jax.random.key(0), max_new_tokens=125)
    with pytest.raises(ValueError, match="needs a draft"):
        generate(TARGET, PROMPT, LENS, jax.random.key(0), max_new_tokens=4, method="speculative")
    with pytest.raises(ValueError, match="unknown decoding method"):
        generate(TARGET, PROMPT, LENS, jax.random.key(0), max_new_tokens=4, method="beam")


def test_threefry_lowers_straight_line_with_the_same_bits():
    """Decoding registers a loop-free CPU lowering of Threefry-2x32: the hash must still match the
    Random123 known-answer vectors (so every random draw, hence every decoded token, is unchanged)
    and a round's random draws must compile without nested while loops."""
    from jax.extend.random import threefry_2x32

    kat = [
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for key, count, expected in kat:
        out = jax.jit(threefry_2x32)(np.uint32(key), np.uint32(count))
        assert [int(x) for x in out] == list(expected)
    draws = lambda k: jax.random.categorical(jax.random.fold_in(k, 3), jnp.zeros((4, 9)))
    assert " while(" not in jax.jit(draws).lower(jax.random.key(0)).compile().as_text()
