"""The node kernels of rocket.decode.verify (token level) and the tree utilities.

Each kernel's emitted token must follow p exactly (chi-square over 2e5 draws in one jitted call);
the same test must reject kernel 2 applied to without-replacement candidates (the power check).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from rocket.decode.methods.speculative import propose
from rocket.decode.methods.token_recycling import TEMPLATE_2_2_2
from rocket.decode.trees import ancestors, children, last_occurrence, template_tree
from rocket.decode.verify import draw_noise, greedy_tree, kseq_rho, verify_node

V, N = 8, 200_000
P = jnp.array([0.30, 0.20, 0.15, 0.12, 0.10, 0.08, 0.05, 0.0])
Q = jnp.array([0.05, 0.05, 0.10, 0.10, 0.20, 0.20, 0.10, 0.20])  # mass where p = 0, little on p's mode


@functools.partial(jax.jit, static_argnames=("rule", "mode", "m"))
def _run(key, rule: str, mode: str, m: int):
    """N independent node verifications -> (accepted index [N], token [N])."""

    def one(k):
        kc, kn = jax.random.split(k)
        if mode == "fixed":  # deterministic candidates: any fixed list (duplicates allowed)
            cand, valid = jnp.array([6, 6, 0, 3][:m]), jnp.ones((m,), bool)
        else:
            cand, valid = propose(kc, Q[None, None], m, mode)
            cand, valid = cand[0, 0], valid[0, 0]
        u, g = draw_noise(kn, (), m, V)
        return verify_node(rule, u, g, P, Q, cand, valid)

    return jax.vmap(one)(jax.random.split(key, N))


def _pvalue(tokens) -> float:
    counts = np.bincount(np.asarray(tokens), minlength=V)
    assert counts[7] == 0, "emitted a token the target gives probability 0"
    p = np.asarray(P, np.float64)[:7]
    expected = p / p.sum() * counts.sum()
    return float(stats.chisquare(counts[:7], expected).pvalue)


@pytest.mark.parametrize(
    "rule,mode,m",
    [
        ("iid", "iid", 1),  # the chain rule
        ("iid", "iid", 3),
        ("without_replacement", "without_replacement", 3),
        ("deterministic", "fixed", 4),
        ("kseq", "iid", 3),
    ],
)
def test_node_kernels_emit_the_target_distribution(rule, mode, m):
    acc, tok = _run(jax.random.key(0), rule, mode, m)
    assert _pvalue(tok) > 1e-4
    if rule == "iid" and m == 1:  # acceptance frequency = sum min(p, q), within 5 sigma
        alpha = float(jnp.sum(jnp.minimum(P, Q)))
        assert abs(float(jnp.mean(acc >= 0)) - alpha) < 5 * np.sqrt(alpha * (1 - alpha) / N)
    if rule == "kseq":  # acceptance = 1 - (1 - beta(rho*))^k
        rho = kseq_rho(P, Q, m)
        beta = float(jnp.sum(jnp.minimum(Q, P / rho)))
        a = 1 - (1 - beta) ** m
        assert abs(float(jnp.mean(acc >= 0)) - a) < 5 * np.sqrt(a * (1 - a) / N)


def test_power_check_iid_kernel_on_without_replacement_candidates_is_rejected():
    _, tok = _run(jax.random.key(0), "iid", "without_replacement", 3)
    assert _pvalue(tok) < 1e-4


def test_kseq_rho_is_the_safe_root_and_k1_is_the_chain_rule():
    for k in (2, 4, 8):
        rho = float(kseq_rho(P, Q, k))
        beta = float(jnp.sum(jnp.minimum(Q, P / rho)))
        assert 1.0 <= rho <= k
        assert (1 - (1 - beta) ** k) / beta <= rho + 1e-6  # acceptance mass never exceeds p
        assert abs(1 - (1 - beta) ** k - rho * beta) < 1e-4  # f(rho*) = 0
    assert float(kseq_rho(P, Q, 1)) == pytest.approx(1.0, abs=1e-6)  # min(1, p / q): Leviathan


def test_greedy_tree_takes_the_deepest_path_matching_the_argmax():
    # root 0 -> {1: tok 5, 2: tok 7}; 1 -> {3: tok 2}; 2 -> {4: tok 9, 5: tok 1}; 4 -> {6: tok 3}
    parent = jnp.array([-1, 0, 0, 1, 2, 2, 4])
    tokens = jnp.array([0, 5, 7, 2, 9, 1, 3])
    depth = np.array([0, 1, 1, 2, 2, 2, 3])
    anc = ancestors(parent[None], 3)[0]
    pred = jnp.array([7, 2, 9, 0, 4, 0, 0])  # argmax at each node: root -> 7, node 2 -> 9, node 4 -> 4
    path, n_acc, emitted = greedy_tree(pred, tokens, parent, jnp.ones(7, bool), anc, depth)
    assert int(n_acc) == 2
    np.testing.assert_array_equal(path[:3], [0, 2, 4])
    np.testing.assert_array_equal(emitted[:3], [7, 9, 4])  # two accepted drafts + the target's token


def test_tree_utilities():
    parent, rank, depth = template_tree(TEMPLATE_2_2_2)
    assert len(parent) == 81 and np.bincount(depth).tolist() == [1, 8, 21, 25, 15, 8, 3]
    assert (parent[1:] < np.arange(1, 81)).all()  # level order: parents first
    anc = ancestors(jnp.asarray(parent)[None], 6)[0]
    np.testing.assert_array_equal(jnp.sum(anc, 1), depth + 1)  # a node's ancestors-or-self: depth + 1
    kids = children(jnp.asarray(parent)[None], jnp.asarray(rank)[None], jnp.ones((1, 81), bool), 8)[0]
    np.testing.assert_array_equal(kids[0], np.arange(1, 9))  # the root's children in rank order
    with pytest.raises(ValueError, match="no parent"):
        template_tree(((0,), (1, 0)))
    last = last_occurrence(jnp.array([[4, 2, 4, 4]]), jnp.array([[True, True, True, False]]))
    np.testing.assert_array_equal(last[0], [False, True, True, False])
