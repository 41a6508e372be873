"""Exactness harness: every lossless method's output law is the warped target's.

An enumerable toy (lookup-table models, V = 6, 3 new tokens = 216 outcome cells): N generations in
ONE jitted call (the rows of a batch), a Pearson chi-square against the exact law, rejecting at
p < 1e-4. The power check: the same test must reject deliberately broken verifiers (kernel 2 on
without-replacement siblings; a sampled draft verified as a point proposal), with a noncentrality
far above the critical value.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import DySpec, SamplerConfig, Speculative, TokenRecycling, generate, verify
from tests.decode_toys import chi_square_pvalue, critical_value, exact_law, table_step

V, N_NEW, N_SAMPLES = 6, 3, 100_000
KEY_IMPL = "rbg"  # compiles faster than threefry on CPU
PROMPT = [1, 2]
_rng = np.random.default_rng(0)
TARGET = _rng.normal(size=(8, V, V)) * 1.5


def _draft(kind: str) -> np.ndarray:
    if kind == "equal":
        return TARGET
    if kind == "different":
        return TARGET + _rng.normal(size=TARGET.shape)
    if kind == "uniform":
        return np.zeros_like(TARGET)
    if kind == "wrong_onehot":  # almost all mass on the target's least likely token
        return 12.0 * (TARGET == TARGET.min(-1, keepdims=True))
    if kind == "support_mismatch":  # q = 0 on the target's two most likely tokens
        order = np.argsort(-TARGET, axis=-1)
        out = TARGET.copy()
        np.put_along_axis(out, order[..., :2], -np.inf, axis=-1)
        return out
    raise ValueError(kind)


DRAFTS = {k: _draft(k) for k in ("equal", "different", "uniform", "wrong_onehot", "support_mismatch")}
T07, TOPK3, TOPP09, T1 = (
    SamplerConfig(temperature=0.7),
    SamplerConfig(top_k=3),
    SamplerConfig(top_p=0.9),
    SamplerConfig(),
)


def _sample(method, sampler, draft="different", draft_sampler=None, seed=0) -> np.ndarray:
    prompt = jnp.broadcast_to(jnp.array(PROMPT, jnp.int32), (N_SAMPLES, len(PROMPT)))
    out = generate(
        table_step(TARGET),
        prompt,
        jnp.full((N_SAMPLES,), len(PROMPT), jnp.int32),
        jax.random.key(seed, impl=KEY_IMPL),
        max_new_tokens=N_NEW,
        method=method,
        sampler=sampler,
        draft=table_step(DRAFTS[draft]),
        draft_sampler=draft_sampler,
    )
    return np.asarray(out.tokens)


def _assert_exact(tokens: np.ndarray, sampler: SamplerConfig) -> None:
    pval, stat, df = chi_square_pvalue(tokens, exact_law(TARGET, PROMPT, N_NEW, sampler))
    assert pval > 1e-4, f"chi2 = {stat:.1f} with df = {df} (p = {pval:.2e}): not the target law"


def _assert_rejected(tokens: np.ndarray, sampler: SamplerConfig) -> None:
    law = exact_law(TARGET, PROMPT, N_NEW, sampler)
    pval, stat, df = chi_square_pvalue(tokens, law)
    assert pval < 1e-4, f"the harness did not detect a broken verifier (chi2 = {stat:.1f}, df = {df})"
    # Noncentrality estimated from the broken law: far above the critical value = power ~ 1.
    flat = np.bincount(np.ravel_multi_index(tokens.T, law.shape), minlength=law.size) / len(tokens)
    big = law.ravel() * len(tokens) >= 5
    lam = len(tokens) * np.sum((flat[big] - law.ravel()[big]) ** 2 / law.ravel()[big])
    assert lam > 3 * critical_value(df), (lam, critical_value(df))


CASES = {
    "chain_support_mismatch_topp": (Speculative(branching=(1, 1)), TOPP09, "support_mismatch"),
    "kseq_tree_different": (Speculative(branching=(3, 1), kseq=True), T1, "different"),
    "dyspec_support_mismatch_t07": (
        DySpec(widths=(2, 3), max_children=3, threshold=0.05),
        T07,
        "support_mismatch",
    ),
    "token_recycling_topk": (TokenRecycling(template=((0,), (1,), (0, 0)), k=2), TOPK3, "equal"),
}
SLOW_CASES = {
    "rsd_tree_different_t07": (
        Speculative(branching=(2, 2), sampling="without_replacement"),
        T07,
        "different",
    ),
    "chain_different": (Speculative(branching=(1, 1)), T1, "different"),
    "chain_wrong_onehot_topk": (Speculative(branching=(1, 1)), TOPK3, "wrong_onehot"),
    "iid_tree_uniform_t07": (Speculative(branching=(2, 2)), T07, "uniform"),
    "chain_equal": (Speculative(branching=(1, 1, 1)), T1, "equal"),
    "chain_uniform_t07": (Speculative(branching=(1,)), T07, "uniform"),
    "iid_tree_wrong_onehot_topp": (Speculative(branching=(2, 1)), TOPP09, "wrong_onehot"),
    "kseq_tree_support_mismatch": (Speculative(branching=(4,), kseq=True), T1, "support_mismatch"),
    "rsd_tree_support_mismatch_topk": (
        Speculative(branching=(3, 1), sampling="without_replacement"),
        TOPK3,
        "support_mismatch",
    ),
    "dyspec_different_t07": (DySpec(widths=(3, 4), max_children=3, threshold=0.01), T07, "different"),
    "token_recycling_t1": (TokenRecycling(template=((0,), (1,), (0, 0), (0, 1)), k=2), T1, "equal"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_method_samples_the_exact_target_law(name):
    method, sampler, draft = CASES[name]
    _assert_exact(_sample(method, sampler, draft), sampler)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CASES))
def test_method_samples_the_exact_target_law_more_settings(name):
    method, sampler, draft = SLOW_CASES[name]
    _assert_exact(_sample(method, sampler, draft), sampler)


@pytest.mark.slow
def test_greedy_draft_proposals_are_verified_as_point_proposals():
    """A greedy draft proposes its top-k deterministically: exact with kernel 4 under a sampled target."""
    _assert_exact(_sample(Speculative(branching=(2, 1)), T1, "different", SamplerConfig(greedy=True)), T1)


@dataclasses.dataclass(frozen=True)
class _WrongRule(Speculative):
    """A deliberately broken verifier: forces a node kernel that does not match the proposal."""

    forced_rule: str = "iid"

    def rule(self, draft_sampler):
        return self.forced_rule


def test_power_check_the_harness_rejects_broken_verifiers(monkeypatch):
    # Kernel 2 (i.i.d. residuals) on without-replacement siblings (spec 2.3).
    broken = _WrongRule(branching=(3, 1), sampling="without_replacement", forced_rule="iid")
    _assert_rejected(_sample(broken, T1, "different"), T1)
    # The chain's correction sampled from p instead of the residual norm(max(p - q, 0)).
    monkeypatch.setattr(verify, "residual", lambda r_v, s_v: r_v)
    broken = _WrongRule(branching=(1, 1), forced_rule="iid")
    _assert_rejected(_sample(broken, T1, "different"), T1)
