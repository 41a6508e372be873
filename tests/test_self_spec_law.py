"""Sampled self-speculation draws exactly the target's law (the chi-square harness of
tests/test_speculative.py), chains and static token trees, with the power check: the same test
rejects a broken verifier.

A real (tiny) transformer with V = 6, scaled so its exits and its full depth disagree; the exact
law of the 6^3 continuations comes from one full forward over all of them.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import ModelStep, SamplerConfig, generate, verify
from rocket.decode.methods import SelfExit, SelfMoR
from tests.decode_toys import chi_square_pvalue, critical_value, noncentrality
from tests.helpers import positions_for, tiny_model

V, N_NEW, N_SAMPLES = 6, 3, 100_000
PROMPT = [1, 2]
SMALL = dict(vocab_size=V, d_model=32, n_heads=2, n_kv_heads=1, max_seq_len=16)
T07 = SamplerConfig(temperature=0.7)


def _step(**changes) -> ModelStep:
    model, params = tiny_model(**SMALL, **changes)
    # Sharpen the tiny model (its init is nearly uniform) so draft and target laws differ clearly.
    params = jax.tree.map(lambda x: x * 3.0, params)
    return ModelStep(model, params)


def _law(step: ModelStep, sampler: SamplerConfig) -> np.ndarray:
    from rocket.decode import warp

    seqs = np.array(list(itertools.product(range(V), repeat=N_NEW)))
    tok = jnp.asarray(np.concatenate([np.broadcast_to(PROMPT, (len(seqs), len(PROMPT))), seqs], 1))
    logits, _ = step.module.apply(step.variables, tok, positions_for(tok), routing="causal")
    probs = np.asarray(warp(logits, sampler), np.float64)
    start = len(PROMPT) - 1
    pr = np.prod([probs[np.arange(len(seqs)), start + i, seqs[:, i]] for i in range(N_NEW)], axis=0)
    return (pr / pr.sum()).reshape((V,) * N_NEW)


def _sample(step: ModelStep, method, sampler: SamplerConfig) -> np.ndarray:
    prompt = jnp.broadcast_to(jnp.array(PROMPT, jnp.int32), (N_SAMPLES, len(PROMPT)))
    out = generate(
        step,
        prompt,
        jnp.full((N_SAMPLES,), len(PROMPT), jnp.int32),
        jax.random.key(0, impl="rbg"),
        max_new_tokens=N_NEW,
        method=method,
        sampler=sampler,
    )
    return np.asarray(out.tokens)


@pytest.mark.parametrize(
    "changes,method",
    [
        (dict(n_layers=2), SelfExit(exit_layer=1, gamma=2)),
        (dict(n_layers=2), SelfExit(exit_layer=1, branching=(2, 1))),  # a static tree, i.i.d. siblings
    ],
    ids=["dense_exit", "dense_exit_tree"],
)
def test_sampled_self_speculation_draws_the_target_law(changes, method):
    step = _step(**changes)
    law = _law(step, T07)
    pval, stat, df = chi_square_pvalue(_sample(step, method, T07), law)
    assert pval > 1e-4, f"chi2 = {stat:.1f} with df = {df} (p = {pval:.2e}): not the target law"


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", [SelfMoR(recursions=1, gamma=2), SelfMoR(recursions=1, branching=(2, 1))], ids=["chain", "tree"]
)
def test_sampled_self_speculation_draws_the_target_law_mor(method):
    step = _step(n_layers=4, mor=dict(sharing="middle_cycle", recursions=2))
    law = _law(step, T07)
    pval, stat, df = chi_square_pvalue(_sample(step, method, T07), law)
    assert pval > 1e-4, f"chi2 = {stat:.1f} with df = {df} (p = {pval:.2e}): not the target law"


@pytest.mark.parametrize(
    "method",
    # not the cached compiles of the law tests
    [SelfExit(exit_layer=1, gamma=3), SelfExit(exit_layer=1, branching=(1, 2))],
    ids=["chain", "tree"],
)
def test_power_check_the_harness_rejects_a_broken_self_verifier(monkeypatch, method):
    """The correction drawn from p instead of norm(max(p - q, 0)): the harness must reject it, with
    a noncentrality far above the critical value (power ~ 1)."""
    step = _step(n_layers=2)
    law = _law(step, T07)
    monkeypatch.setattr(verify, "residual", lambda r_v, s_v: r_v)
    tokens = _sample(step, method, T07)
    pval, stat, df = chi_square_pvalue(tokens, law)
    assert pval < 1e-4, f"the harness did not detect a broken verifier (chi2 = {stat:.1f}, df = {df})"
    flat = np.bincount(np.ravel_multi_index(tokens.T, law.shape), minlength=law.size) / len(tokens)
    assert noncentrality(law, flat.reshape(law.shape), N_SAMPLES) > 5 * critical_value(df)
