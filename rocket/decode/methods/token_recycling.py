"""Token Recycling (Luo et al., "Turning Trash into Treasure", arXiv 2408.08696, ACL 2025).

No draft model: an adjacency matrix M[V, k] holds, for every token v, the top-k next tokens the
target predicted the last time it processed v. A round:
  1. Retrieval (static tree BFS): tok[0] = pending token; a node reached by rank path (r_1..r_d)
     takes tok = M[tok[parent], r_d]. The default template is the paper's "2.2.2" (80 nodes + root,
     depth 6; higher-ranked candidates get more children and deeper subtrees).
  2. One target call on the tree (positions pos + depth, ancestor mask).
  3. Verification: greedy (the paper's setting): the deepest node whose path matches the target's
     argmax; sampling (an extension, exact): children are deterministic candidates in rank order,
     so the tree walk with the deterministic kernel gives an exact target sample.
  4. Update: M[tok[n]] = top-k(logits[n]) for every node, rejected ones included (the "recycling");
     duplicate tokens: the last node in level order wins.
M starts at zeros (or `carry`, "hot start" across calls) and is seeded from the prompt's prefill
logits (as smpanaro/token-recycling does). M is per row ([B, V, k]) so rows stay independent.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rocket.decode.engine import Ctx, Method, RoundOut, StagedCache, Stats, last_prompt_token, prefill
from rocket.decode.sampling import warp
from rocket.decode.trees import last_occurrence, static_ancestors, static_children, template_tree
from rocket.decode.verify import draw_noise, greedy_tree, walk_tree

# The paper's "2.2.2" template: rank paths per depth (8, 21, 25, 15, 8, 3 nodes at depths 1..6).
TEMPLATE_2_2_2: tuple[tuple[int, ...], ...] = (
    tuple((i,) for i in range(8))
    + tuple((0, i) for i in range(8))
    + ((1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (4, 0), (5, 0), (6, 0), (7, 0))
    + tuple((0, 0, i) for i in range(8))
    + ((0, 1, 0), (0, 1, 1), (0, 1, 2), (0, 2, 0), (0, 2, 1), (0, 3, 0), (0, 4, 0), (0, 5, 0), (0, 6, 0))
    + ((0, 7, 0), (1, 0, 0), (1, 0, 1), (1, 1, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0), (5, 0, 0))
    + tuple((0, 0, 0, i) for i in range(5))
    + ((0, 0, 1, 0), (0, 0, 1, 1), (0, 0, 2, 0), (0, 0, 3, 0), (0, 0, 4, 0), (0, 1, 0, 0), (0, 2, 0, 0))
    + ((1, 0, 0, 0), (2, 0, 0, 0), (3, 0, 0, 0))
    + ((0, 0, 0, 0, 0), (0, 0, 0, 0, 1), (0, 0, 0, 0, 2), (0, 0, 0, 1, 0), (0, 0, 0, 2, 0), (0, 0, 1, 0, 0))
    + ((0, 1, 0, 0, 0), (1, 0, 0, 0, 0))
    + ((0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 1), (0, 0, 0, 1, 0, 0))
)


@flax.struct.dataclass
class TRState:
    cache: StagedCache  # the accepted path of the last round is written at the next read
    pending: jax.Array  # [B]
    pos: jax.Array  # [B]
    adjacency: jax.Array  # [B, V, k] int32


def update_adjacency(
    adj_bvk: jax.Array, tokens_bn: jax.Array, logits_bnv: jax.Array, valid_bn: jax.Array
) -> jax.Array:
    """M[b, tokens[b, n]] = top-k(logits[b, n]) for valid n; the last occurrence of a token wins."""
    b, v, k = adj_bvk.shape
    top_bnk = jax.lax.top_k(logits_bnv, k)[1].astype(jnp.int32)
    rows_bn = jnp.where(last_occurrence(tokens_bn, valid_bn), tokens_bn, v)  # v: dropped
    return adj_bvk.at[jnp.arange(b)[:, None], rows_bn].set(top_bnk, mode="drop")


@dataclasses.dataclass(frozen=True)
class TokenRecycling(Method):
    template: tuple[tuple[int, ...], ...] = TEMPLATE_2_2_2
    k: int = 8  # candidates kept per token (the paper's --output-id-topk)
    seed_from_prompt: bool = True

    def __post_init__(self):
        template_tree(self.template)  # validates the paths
        if max(max(p) for p in self.template) >= self.k:
            raise ValueError(f"template ranks must be < k={self.k}")

    @property
    def _tree(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return template_tree(self.template)

    @property
    def emit_width(self) -> int:
        return int(self._tree[2].max()) + 1

    @property
    def block_width(self) -> int:
        return len(self.template) + 1

    def init(self, ctx: Ctx, prompt_bp, prompt_len_b, key, carry: Any) -> TRState:
        del key
        b, p = prompt_bp.shape
        v = ctx.target.vocab_size
        cache = ctx.target.new_cache(b, ctx.max_len)
        out, cache = prefill(ctx.target, cache, prompt_bp, prompt_len_b)
        adj = (
            jnp.zeros((b, v, self.k), jnp.int32) if carry is None else jnp.broadcast_to(carry, (b, v, self.k))
        )
        if self.seed_from_prompt:
            in_prompt_bp = jnp.arange(p)[None, :] < prompt_len_b[:, None]
            adj = update_adjacency(adj, prompt_bp, out.logits, in_prompt_bp)
        staged = StagedCache.empty(cache, out.new_kv, self.emit_width)
        return TRState(staged, last_prompt_token(prompt_bp, prompt_len_b), prompt_len_b - 1, adj)

    def round(self, ctx: Ctx, s: TRState, key: jax.Array, active_b: jax.Array) -> RoundOut:
        parent_n, rank_n, depth_n = self._tree
        b, n = s.pending.shape[0], parent_n.shape[0]
        max_depth = int(depth_n.max())
        bi = jnp.arange(b)[:, None]
        # 1. Retrieval: one static gather per depth.
        tokens = jnp.zeros((b, n), jnp.int32).at[:, 0].set(s.pending)
        for d in range(1, max_depth + 1):
            idx = np.flatnonzero(depth_n == d)
            tokens = tokens.at[:, idx].set(s.adjacency[bi, tokens[:, parent_n[idx]], rank_n[idx]])
        anc_nn = static_ancestors(parent_n)
        # 2. One target call on the tree.
        anc_bnn = jnp.broadcast_to(jnp.asarray(anc_nn), (b, n, n))
        cache = s.cache.read()
        out = ctx.target(tokens, s.pos[:, None] + depth_n, cache, anc_bnn)
        # 3. Verify.
        parent_bn = jnp.broadcast_to(jnp.asarray(parent_n), (b, n))
        valid_bn = jnp.ones((b, n), bool)
        if ctx.sampler.greedy:
            pred_bn = jnp.argmax(out.logits, -1).astype(jnp.int32)
            verify = lambda *a: greedy_tree(*a, depth_n)
            path, n_acc, emitted = jax.vmap(verify)(pred_bn, tokens, parent_bn, valid_bn, anc_bnn)
        else:
            p_bnv = warp(out.logits, ctx.sampler)
            kids = static_children(parent_n, rank_n, self.k)
            u, g = draw_noise(key, (b, max_depth + 1), self.k, p_bnv.shape[-1])
            verify = lambda u, g, p, t: walk_tree("deterministic", u, g, p, p, t, kids, anc_nn, depth_n)
            path, n_acc, emitted = jax.vmap(verify)(u, g, p_bnv, tokens)
        # 4. Update M from every node (recycling), commit the accepted path.
        adj = update_adjacency(s.adjacency, tokens, out.logits, valid_bn & active_b[:, None])
        staged = StagedCache(cache, out.new_kv.take(path), jnp.where(active_b, n_acc + 1, 0))
        y_b = jnp.take_along_axis(emitted, n_acc[:, None], axis=1)[:, 0]
        new = TRState(
            staged, jnp.where(active_b, y_b, s.pending), s.pos + jnp.where(active_b, n_acc + 1, 0), adj
        )
        return RoundOut(new, emitted, n_acc + 1, Stats.per_round(b, 1, 0, n - 1, n_acc))

    def carry(self, state: TRState) -> jax.Array:
        return state.adjacency
