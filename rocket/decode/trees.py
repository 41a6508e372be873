"""Token trees for speculative decoding.

A tree of N nodes per row, node 0 = the root (the pending last token), nodes in level order (a
parent always precedes its children, as the in-block causal mask requires):

  tokens[B, N] int32, parent[B, N] int32 (-1 for the root), sib[B, N] int32 (rank among its
  siblings = proposal order), valid[B, N] bool, depth: static per node (levels have static widths).

The verify call feeds all N tokens at positions `pos + depth` with `block_mask = ancestors(...)`
(ancestor-or-self); a root-to-node path is committed with `commit_path`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def tree_widths(branching: tuple[int, ...]) -> tuple[int, ...]:
    """Level widths of a static tree with branching[d] children per depth-d node: prod_{i<=d} b_i."""
    return tuple(int(w) for w in np.cumprod(branching))


def level_depths(widths: tuple[int, ...]) -> np.ndarray:
    """[N] depth of each node for a level-ordered tree with `widths[d - 1]` nodes at depth d >= 1."""
    return np.concatenate([[0]] + [np.full(w, d + 1) for d, w in enumerate(widths)]).astype(np.int32)


def ancestors(parent_bn: jax.Array, max_depth: int) -> jax.Array:
    """bool[B, N, N]: anc[b, n, m] = m is n or an ancestor of n. anc[n] = {n} | anc[parent[n]]."""
    b, n = parent_bn.shape
    eye_nn = jnp.eye(n, dtype=bool)
    anc_bnn = jnp.broadcast_to(eye_nn, (b, n, n))
    has_parent_bn = parent_bn >= 0
    for _ in range(max_depth):
        from_parent = jnp.take_along_axis(anc_bnn, jnp.maximum(parent_bn, 0)[:, :, None], axis=1)
        anc_bnn = eye_nn[None] | (has_parent_bn[:, :, None] & from_parent)
    return anc_bnn


def children(parent_bn: jax.Array, sib_bn: jax.Array, valid_bn: jax.Array, max_children: int) -> jax.Array:
    """int32[B, N, C]: children[b, n, j] = the node with parent n and sibling rank j, or -1."""
    b, n = parent_bn.shape
    keep = valid_bn & (parent_bn >= 0) & (sib_bn < max_children)
    row = jnp.where(keep, parent_bn, n)  # out of bounds -> dropped
    out = jnp.full((b, n, max_children), -1, jnp.int32)
    bi = jnp.arange(b)[:, None]
    return out.at[bi, row, jnp.minimum(sib_bn, max_children - 1)].set(
        jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n)), mode="drop"
    )


def static_ancestors(parent_n: np.ndarray) -> np.ndarray:
    """`ancestors` of one static level-ordered tree, in numpy (a constant of the round's program)."""
    n = len(parent_n)
    anc_nn = np.eye(n, dtype=bool)
    for i in range(1, n):
        anc_nn[i] |= anc_nn[parent_n[i]]
    return anc_nn


def static_children(parent_n: np.ndarray, sib_n: np.ndarray, max_children: int) -> np.ndarray:
    """`children` of one static tree (every node valid), in numpy: int32[N, C], -1 = none."""
    out = np.full((len(parent_n), max_children), -1, np.int32)
    for i in np.flatnonzero((parent_n >= 0) & (sib_n < max_children)):
        out[parent_n[i], sib_n[i]] = i
    return out


def template_tree(paths: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A static tree from root-to-node rank paths (Token Recycling / Medusa "choices").

    Each path, e.g. (0, 1, 2), names a node by the candidate rank taken at each depth. Returns
    (parent[N], rank[N], depth[N]) with N = 1 + len(paths), nodes sorted by depth (level order).
    """
    ordered = sorted(set(paths), key=lambda p: (len(p), p))
    if len(ordered) != len(paths) or any(len(p) == 0 for p in paths):
        raise ValueError("tree template paths must be distinct and non-empty")
    index = {(): 0} | {p: i + 1 for i, p in enumerate(ordered)}
    parent, rank, depth = [-1], [0], [0]
    for p in ordered:
        if p[:-1] not in index:
            raise ValueError(f"tree template path {p} has no parent path {p[:-1]}")
        parent.append(index[p[:-1]])
        rank.append(p[-1])
        depth.append(len(p))
    return np.array(parent, np.int32), np.array(rank, np.int32), np.array(depth, np.int32)


def last_occurrence(tokens_bn: jax.Array, valid_bn: jax.Array) -> jax.Array:
    """bool[B, N]: valid and no later valid entry holds the same token (makes duplicate-index
    scatters deterministic: the last occurrence wins)."""
    n = tokens_bn.shape[1]
    later_nm = jnp.arange(n)[None, :] > jnp.arange(n)[:, None]
    same_bnm = (tokens_bn[:, :, None] == tokens_bn[:, None, :]) & valid_bn[:, None, :] & later_nm[None]
    return valid_bn & ~jnp.any(same_bnm, axis=2)
