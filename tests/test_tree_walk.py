"""The vectorised tree walk equals the sequential walk, and static trees equal the traced ones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rocket.decode import Speculative
from rocket.decode.methods.token_recycling import TEMPLATE_2_2_2
from rocket.decode.trees import ancestors, children, static_ancestors, static_children, template_tree
from rocket.decode.verify import draw_noise, verify_node, walk_tree

V = 12
node_kernel = jax.jit(verify_node, static_argnums=0)


def sequential_walk(rule, u_dm, g_dv, p_nv, q_nv, tokens_n, children_nc):
    """The walk as the papers state it: from the root, run the node kernel with the noise of the
    node's depth, move to the accepted child, stop at the first node that accepts none."""
    depth = u_dm.shape[0] - 1
    node, path, emitted = 0, [0] * (depth + 1), [0] * (depth + 1)
    for d in range(depth + 1):
        kids = children_nc[node]
        j, tok = node_kernel(
            rule, u_dm[d], g_dv[d], p_nv[node], q_nv[node], tokens_n[np.maximum(kids, 0)], kids >= 0
        )
        emitted[d] = int(tok)
        if int(j) < 0:
            return path, d, emitted
        node = int(kids[int(j)])
        path[d + 1] = node
    raise AssertionError("a node at the deepest level has no children")


@pytest.mark.parametrize(
    "rule, tree",
    [("iid", "chain"), ("without_replacement", "rsd"), ("deterministic", "recycling"), ("kseq", "rsd")],
)
def test_vectorised_walk_equals_the_sequential_walk(rule, tree):
    if tree == "recycling":
        parent, sib, depth = template_tree(TEMPLATE_2_2_2[:20])
    else:
        spec = Speculative(branching=(1, 1, 1) if tree == "chain" else (3, 2, 1))
        parent, sib = spec.static_tree()
        depth = static_ancestors(parent).sum(1) - 1
    n, c, d = len(parent), int(sib.max()) + 1, int(depth.max())
    kids, anc = static_children(parent, sib, c), static_ancestors(parent)
    walk = jax.jit(lambda *a: walk_tree(rule, *a, kids, anc, depth))
    for seed in range(8):
        k = jax.random.split(jax.random.key(seed), 4)
        # Peaked p and q over a small vocabulary: both acceptances and rejections at every depth.
        p = jax.nn.softmax(3 * jax.random.normal(k[0], (n, V)))
        q = jax.nn.softmax(3 * jax.random.normal(k[1], (n, V)))
        q = p if seed % 3 == 0 else q  # q == p: long accepted paths
        tokens = jax.random.randint(k[2], (n,), 0, V)
        if rule == "deterministic":  # point proposals: the tree's tokens are the candidates
            tokens = jnp.where(jnp.arange(n) % 2 == 0, jnp.argmax(p[jnp.maximum(parent, 0)], -1), tokens)
        u, g = draw_noise(k[3], (d + 1,), c, V)
        path, n_acc, emitted = walk(u, g, p, q, tokens)
        ref_path, ref_n, ref_emitted = sequential_walk(rule, u, g, p, q, tokens, kids)
        assert int(n_acc) == ref_n
        np.testing.assert_array_equal(path[: ref_n + 1], ref_path[: ref_n + 1])
        np.testing.assert_array_equal(emitted[: ref_n + 1], ref_emitted[: ref_n + 1])


def test_static_trees_equal_the_traced_constructions():
    for branching in ((1, 1, 1, 1), (3, 2, 1), (2, 3)):
        spec = Speculative(branching=branching)
        parent, sib = spec.static_tree()
        assert len(parent) == spec.block_width and (parent[1:] < np.arange(1, len(parent))).all()
        # The traced tree: expand() per level, as the round builds it.
        q = jnp.ones((1, 1, V)) / V
        starts = np.concatenate([[0, 1], 1 + np.cumsum(spec.widths)])  # first node of each level
        parents, sibs = [np.array([-1])], [np.array([0])]
        for d in range(len(branching)):
            w = int(starts[d + 1] - starts[d])
            lvl = spec.expand(
                jax.random.key(d), jnp.broadcast_to(q, (1, w, V)), None, jnp.ones((1, w), bool), d, True
            )
            parents.append(starts[d] + np.asarray(lvl.parent[0]))
            sibs.append(np.asarray(lvl.sib[0]))
        np.testing.assert_array_equal(parent, np.concatenate(parents))
        np.testing.assert_array_equal(sib, np.concatenate(sibs))
        valid = jnp.ones((1, len(parent)), bool)
        np.testing.assert_array_equal(
            static_ancestors(parent), ancestors(jnp.asarray(parent)[None], len(branching))[0]
        )
        np.testing.assert_array_equal(
            static_children(parent, sib, max(branching)),
            children(jnp.asarray(parent)[None], jnp.asarray(sib)[None], valid, max(branching))[0],
        )
