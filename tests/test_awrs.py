"""Regex -> token automaton, and AWRS: constraint always holds, exact local law, proper weights."""

from __future__ import annotations

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode.methods.awrs import DFATables, awrs_step, ess, resample
from rocket.decode.tools.regex_dfa import compile_regex, token_dfa
from tests.decode_toys import chi_square_pvalue, critical_value, noncentrality

PATTERNS = [r"ab*c", r"(a|bc)+", r"\d{2,3}-x?", r"[a-c]{2}", r"[^a]*b", r"(ab|a)(c|bc)", r"a{3}|(b|c){0,2}"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_regex_dfa_agrees_with_python_re(pattern):
    dfa = compile_regex(pattern)
    for n in range(5):
        for chars in itertools.product("abc1-x", repeat=n):
            s = "".join(chars)
            state = 0
            for b in s.encode():
                state = dfa.next_sb[state, b]
            assert bool(dfa.accepting[state]) == (re.fullmatch(pattern, s) is not None), s
            # The dead state is exactly "no completion matches": the prefix is dead iff no string extends it.
            if state == dfa.dead:
                assert not any(re.fullmatch(pattern, s + t) for t in ("", "a", "b", "c", "bc", "1-", "x"))


@pytest.mark.parametrize("bad", ["(ab", "ab)", "a**", "[a-", "x{3,1}", "\\"])
def test_regex_errors_are_clear(bad):
    with pytest.raises(ValueError, match="regex"):
        compile_regex(bad)


def test_token_dfa_folds_multi_byte_tokens_and_eos():
    dfa = compile_regex(r"(ab)+")
    tokens = [b"", b"a", b"b", b"ab", b"ba", b"aba"]
    tdfa = token_dfa(dfa, tokens, eos_id=0)
    for s in range(dfa.next_sb.shape[0]):
        for v, tb in enumerate(tokens[1:], start=1):
            want = s
            for b in tb:
                want = dfa.next_sb[want, b]
            assert tdfa.next_sv[s, v] == want
    after_ab = tdfa.next_sv[0, 3]
    assert tdfa.next_sv[after_ab, 0] == after_ab and tdfa.next_sv[0, 0] == tdfa.dead  # EOS iff accepting


# An enumerable toy: V = 5 tokens, 3 steps, a lookup-table LM (logits indexed by the whole context).
TOY_TOKENS = [b"a", b"b", b"c", b"ab", b"ca"]
TOY_PATTERN = r"(ab|c)*a?|b+c"
V, STEPS = len(TOY_TOKENS), 3


def _toy():
    dfa = DFATables.from_dfa(token_dfa(compile_regex(TOY_PATTERN), TOY_TOKENS))
    n_ctx = sum(V**j for j in range(STEPS))
    logits_cv = jax.random.normal(jax.random.key(3), (n_ctx, V)) * 1.5
    return dfa, jax.nn.log_softmax(logits_cv, axis=-1)


def _exact_law(dfa: DFATables, logp_cv: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Global constrained law p(x) c(x) / Z over the V^3 sequences, and the locally masked law."""
    nxt, dead, logp = np.asarray(dfa.next_sv), int(dfa.dead), np.asarray(logp_cv, np.float64)
    glob, local = np.zeros(V**STEPS), np.zeros(V**STEPS)
    for cell, seq in enumerate(itertools.product(range(V), repeat=STEPS)):
        state, ctx, p, q = 0, 0, 1.0, 1.0
        for tok in seq:
            row = np.exp(logp[ctx])
            allowed = nxt[state] != dead
            p *= row[tok]
            q *= row[tok] * allowed[tok] / max(np.sum(row * allowed), 1e-300)
            state, ctx = nxt[state, tok], ctx * V + tok + 1
        glob[cell] = p * (state != dead)
        local[cell] = q
    return glob / glob.sum(), local


def _run_particles(dfa: DFATables, logp_cv: jax.Array, n: int, max_checks: int | None = None):
    def particle(key):
        def step(carry, k):
            state, ctx, log_w, checks = carry
            out = awrs_step(k, logp_cv[ctx], state, dfa, max_checks)
            carry = (dfa.next_sv[state, out.token], ctx * V + out.token + 1, log_w + out.log_weight, checks)
            return (*carry[:3], checks + out.n_checks), out.token

        init = (jnp.int32(0), jnp.int32(0), jnp.float32(0.0), jnp.int32(0))
        (state, _, log_w, checks), toks = jax.lax.scan(step, init, jax.random.split(key, STEPS))
        return toks, state, log_w, checks

    return jax.jit(jax.vmap(particle))(jax.random.split(jax.random.key(0), n))


def _weighted_law_stat(cells: np.ndarray, w: np.ndarray, target: np.ndarray) -> tuple[float, int]:
    """Wald statistic of the estimating equations g_i(s) = w_i (1{x_i = s} - pi(s)), which have mean 0
    iff the weighted particles estimate pi. Cells of target mass < 50 / N are pooled (the normal
    approximation needs counts); one group is dropped (the g's sum to 0) -> (statistic, df)."""
    n = len(w)
    big = target * n >= 50
    group = np.where(big, np.cumsum(big) - 1, big.sum())  # cell -> group, small cells pooled last
    pi_g = np.bincount(group, target)
    g = w[:, None] * ((group[cells][:, None] == np.arange(len(pi_g) - 1)) - pi_g[None, :-1])
    mean, cov = g.mean(0), np.cov(g, rowvar=False)
    return float(n * mean @ np.linalg.solve(cov, mean)), len(pi_g) - 1


def test_awrs_samples_satisfy_the_constraint_and_weights_give_the_global_law():
    dfa, logp_cv = _toy()
    n = 20_000
    toks, state, log_w, checks = (np.asarray(a) for a in _run_particles(dfa, logp_cv, n))
    # Every surviving particle satisfies the constraint; a particle dies (weight 0) only at a dead end
    # (after "b+c" no token is allowed), which this toy reaches.
    np.testing.assert_array_equal(np.isfinite(log_w), state != int(dfa.dead))
    assert 0 < np.mean(~np.isfinite(log_w)) < 0.5
    assert np.all(checks <= STEPS * (V + 1))
    target, local = _exact_law(dfa, logp_cv)
    cells = np.ravel_multi_index(toks.T, (V,) * STEPS)
    stat, df = _weighted_law_stat(cells, np.exp(log_w), target)
    assert stat < critical_value(df, 1e-4), (stat, df)
    # Power check: the same particles without the weights (= local masking) must be rejected.
    assert noncentrality(target, local, n) > 10 * critical_value(df, 1e-4)
    assert _weighted_law_stat(cells, np.ones(n), target)[0] > critical_value(df, 1e-4)


def test_awrs_local_draw_is_exact_and_weights_are_unbiased():
    """One step after "b" (only "b" or "c" may follow): token ~ p c / Z (chi^2), mean weight = Z."""
    dfa, logp_cv = _toy()
    n, state = 20_000, dfa.next_sv[0, 1]  # context "b" has row 0 * V + 1 + 1 = 2
    out = jax.jit(jax.vmap(lambda k: awrs_step(k, logp_cv[2], state, dfa)))(
        jax.random.split(jax.random.key(1), n)
    )
    p = np.exp(np.asarray(logp_cv[2], np.float64))
    c = np.asarray(dfa.next_sv[state]) != int(dfa.dead)
    z = np.sum(p * c)
    assert 0.01 < z < 0.9  # the constraint removes most of the mass, so the test has teeth
    assert np.all(c[np.asarray(out.token)])
    pval, stat, df = chi_square_pvalue(np.asarray(out.token)[:, None], p * c / z)
    assert pval > 1e-4, (stat, df)
    w = np.exp(np.asarray(out.log_weight, np.float64))
    assert abs(w.mean() - z) < 5 * w.std() / np.sqrt(n)
    # Power: the unconstrained law differs measurably from the constrained one.
    assert noncentrality(p * c / z, p, n) > 10 * critical_value(df, 1e-4)


def test_awrs_check_budget_kills_particles_instead_of_breaking_the_constraint():
    dfa, logp_cv = _toy()
    toks, state, log_w, checks = (np.asarray(a) for a in _run_particles(dfa, logp_cv, 2000, max_checks=1))
    alive = np.isfinite(log_w)
    assert 0 < alive.sum() < len(alive)
    assert np.all(state[alive] != int(dfa.dead))


def test_resampling_follows_the_weights():
    log_w = jnp.log(jnp.array([0.1, 0.0, 0.6, 0.3]))
    idx = jax.vmap(lambda k: resample(k, log_w))(jax.random.split(jax.random.key(0), 4000))
    freq = np.bincount(np.asarray(idx).ravel(), minlength=4) / idx.size
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.6, 0.3], atol=0.02)
    np.testing.assert_allclose(ess(log_w), 1 / (0.01 + 0.36 + 0.09), rtol=1e-5)


def test_awrs_engine_method_generates_only_viable_prefixes():
    from rocket.data.tokenizers import ByteTokenizer
    from rocket.decode import ModelStep, SamplerConfig, generate
    from rocket.decode.methods.awrs import AWRSDecode
    from tests.helpers import tiny_model

    tok = ByteTokenizer()
    tdfa = token_dfa(compile_regex(r"(ab|c)+\d*"), [tok.decode_bytes([i]) for i in range(tok.vocab_size)])
    model, params = tiny_model()
    m = 8  # particles = rows
    prompt = jnp.tile(jnp.asarray(tok.encode(b"x = "))[None], (m, 1))
    out = generate(
        ModelStep(model, params),
        prompt,
        jnp.full((m,), 4),
        jax.random.key(0),
        max_new_tokens=6,
        method=AWRSDecode(tdfa),
        sampler=SamplerConfig(temperature=1.0),
    )
    for row in range(m):
        text = tok.decode(np.asarray(out.tokens[row]))
        assert re.fullmatch(r"(ab|c)+\d*", text) or any(
            re.fullmatch(r"(ab|c)+\d*", text + t) for t in ("b", "ab")
        )
        state = 0
        for t in np.asarray(out.tokens[row]):
            state = tdfa.next_sv[state, t]
        assert state == int(out.carry.dfa_state[row]) and state != tdfa.dead
    assert np.all(np.isfinite(np.asarray(out.carry.log_weight))) and np.all(
        np.asarray(out.carry.n_checks) >= 6
    )
