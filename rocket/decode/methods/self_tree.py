"""Self-speculative decoding with a static token tree: the self-draft path of `self_spec` grows a
tree (branching[d] children per depth-d node) instead of a chain, verified by the full depth in
one call with the tree's ancestor mask; exactly the target's law, one KV cache.

One round (pending root x_0 at position pos, D = len(branching), N = 1 + sum of the level widths):
  1. The root runs the draft path (shared prefix, private stages, LM head): its prefix K/V are
     committed to the model's cache and its private K/V to the draft's cache (the root is always
     kept); q_0 = the draft's distribution at the root.
  2. Level d = 1 .. D: level d's nodes are drawn from q at level d - 1's nodes (i.i.d. siblings for
     a sampled draft, top-k for a greedy one; `Speculative.expand`), then one draft call on levels
     1..d at positions pos + depth with the ancestor-or-self mask reads the committed history;
     for d < D its LM head gives q at level d. The call at d = D has no head: it only supplies
     every node's hidden state at the first skipped stage and its shared-prefix / private K/V.
  3. One verifier call on the whole tree (root + N - 1 nodes) starting at the first skipped stage
     from those hidden states, with the ancestor mask: the shared prefix is never recomputed.
     Node n's logits are the full model's at n given the history and n's ancestors, because the
     shared prefix of a node depends only on its ancestors (the mask) and the committed history.
  4. `walk_tree` with kernel "iid" (sampled draft; SpecInfer's multi-candidate rule, exact for
     i.i.d. siblings) or "deterministic" (greedy draft's top-k point proposals), or `greedy_tree`
     for a greedy target: exact (rocket.decode.verify).
  5. The accepted root-to-node path is committed (`commit_path`): the remaining layers from the
     verifier's K/V (root included), the shared layers and the draft's private layers from the
     d = D call (nodes only; the root is already there). Every layer then holds exactly the
     accepted history, as after a fresh full forward. The correction / bonus token is pending.

Stats: one verifier call and D + 1 draft calls per round (the level calls recompute levels 1..d,
as a draft model does in `speculative.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rocket.decode.engine import Ctx, RoundOut, Stats
from rocket.decode.methods.self_spec import SelfSpecState, _SelfDraft, commit_layers, verify_forward
from rocket.decode.methods.speculative import Speculative, draft_dist
from rocket.decode.sampling import warp
from rocket.decode.trees import ancestors, children, level_depths, tree_widths
from rocket.decode.verify import draw_noise, greedy_tree, walk_tree
from rocket.models.exits import readout


def tree_round(
    method: _SelfDraft, ctx: Ctx, s: SelfSpecState, key: jax.Array, active_b: jax.Array
) -> RoundOut:
    """One round of tree self-speculation (module docstring) -> RoundOut with D + 1 emitted slots."""
    cfg, params = ctx.target.module.cfg, ctx.target.variables["params"]
    plan = method.plan(cfg)
    shape = Speculative(branching=method.branching)  # level expansion of a static tree
    b, n_levels = s.pending.shape[0], len(method.branching)
    widths = tree_widths(method.branching)
    depth_n = level_depths(widths)
    offsets = np.concatenate([[1], 1 + np.cumsum(widths)])  # level d is nodes [offsets[d-1], offsets[d])
    n_nodes = int(offsets[-1])
    keys = jax.random.split(key, n_levels + 1)
    greedy_draft = ctx.draft_sampler.greedy

    # 1. The root: the draft path, its K/V committed to both caches, q at the root.
    root_pos = s.pos[:, None]
    hd, (h_root, act_root), kvs, valids = method._draft_body(
        cfg, params, plan, s.pending[:, None], root_pos, s.cache, s.private
    )
    step_b = active_b.astype(jnp.int32)
    cache = commit_layers(s.cache, 0, kvs[0], valids[0], root_pos, step_b)
    private = commit_layers(s.private, 0, kvs[1], valids[1], root_pos, step_b)
    q_level = draft_dist(readout(cfg, params, hd)[0], ctx.draft_sampler)  # [B, 1, V]

    # 2. Grow the tree level by level; each level call runs the draft path on levels 1..d.
    tokens = jnp.zeros((b, n_nodes), jnp.int32).at[:, 0].set(s.pending)
    parent = jnp.full((b, n_nodes), -1, jnp.int32)
    sib = jnp.zeros((b, n_nodes), jnp.int32)
    valid = jnp.ones((b, n_nodes), bool)
    q_nv = jnp.zeros((b, n_nodes, q_level.shape[-1]), jnp.float32).at[:, :1].set(q_level)
    level_valid = jnp.ones((b, 1), bool)
    node_pos = s.pos[:, None] + depth_n[1:]  # [B, N - 1] positions of the non-root nodes
    for d in range(1, n_levels + 1):
        lo, hi = int(offsets[d - 1]), int(offsets[d])
        prev_lo = 0 if d == 1 else int(offsets[d - 2])
        lvl = shape.expand(keys[d - 1], q_level, None, level_valid, d - 1, greedy_draft)
        tokens = tokens.at[:, lo:hi].set(lvl.tokens)
        parent = parent.at[:, lo:hi].set(prev_lo + lvl.parent)
        sib = sib.at[:, lo:hi].set(lvl.sib)
        valid = valid.at[:, lo:hi].set(lvl.valid)
        level_valid = lvl.valid
        anc = ancestors(parent[:, :hi], d)[:, 1:, 1:]
        hd, (h_nodes, act_nodes), kvs, valids = method._draft_body(
            cfg, params, plan, tokens[:, 1:hi], node_pos[:, : hi - 1], cache, private, anc
        )
        if d < n_levels:
            q_level = draft_dist(readout(cfg, params, hd[:, lo - 1 : hi - 1])[0], ctx.draft_sampler)
            q_nv = q_nv.at[:, lo:hi].set(q_level)

    # 3. The verifier on the whole tree, from the hidden states at the first skipped stage.
    anc_bnn = ancestors(parent, n_levels)
    positions_bn = s.pos[:, None] + depth_n
    h_bnd = jnp.concatenate([h_root, h_nodes], axis=1)
    act_bn = jnp.concatenate([act_root, act_nodes], axis=1)
    logits_bnv, vkvs, vvalids = verify_forward(cfg, params, plan, h_bnd, act_bn, positions_bn, cache, anc_bnn)

    # 4. Verify.
    if ctx.sampler.greedy:
        pred_bn = jnp.argmax(logits_bnv, -1).astype(jnp.int32)
        verify = lambda *a: greedy_tree(*a, depth_n)
        path, n_acc, emitted = jax.vmap(verify)(pred_bn, tokens, parent, valid, anc_bnn)
    else:
        p_bnv = warp(logits_bnv, ctx.sampler)
        kids = children(parent, sib, valid, max(method.branching))
        u, g = draw_noise(keys[-1], (b, n_levels + 1), kids.shape[-1], p_bnv.shape[-1])
        verify = lambda *a: walk_tree("deterministic" if greedy_draft else "iid", *a, depth_n)
        path, n_acc, emitted = jax.vmap(verify)(u, g, p_bnv, q_nv, tokens, kids, anc_bnn)

    # 5. Commit the accepted path: the remaining layers from the verifier (root first), the shared
    # and private layers from the last level call (its block index = node - 1; the root is in).
    n_keep = jnp.where(active_b, n_acc, 0)
    node_path = jnp.maximum(path[:, 1:] - 1, 0)
    cache = commit_layers(cache, 0, kvs[0], valids[0], node_pos, n_keep, node_path)
    private = commit_layers(private, 0, kvs[1], valids[1], node_pos, n_keep, node_path)
    start = len(plan.cache_layers("shared"))
    cache = commit_layers(cache, start, vkvs, vvalids, positions_bn, jnp.where(active_b, n_acc + 1, 0), path)
    y_b = jnp.take_along_axis(emitted, n_acc[:, None], axis=1)[:, 0]
    new = SelfSpecState(
        cache, private, jnp.where(active_b, y_b, s.pending), s.pos + jnp.where(active_b, n_acc + 1, 0)
    )
    drafted_b = jnp.sum(valid[:, 1:], axis=1)
    stats = Stats.per_round(b, 1, n_levels + 1, drafted_b, n_acc, jnp.minimum(n_acc + 1, n_levels))
    return RoundOut(new, emitted, n_acc + 1, stats)
