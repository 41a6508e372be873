"""Speculative sampling with a draft model: chains and token trees, static or dynamic (DySpec).

One round:
  1. The draft ingests its pending tokens (1 or 2, a static 2-token block) and gives q at the root.
  2. The tree grows level by level: level d's nodes are drawn from q at level d - 1's nodes, then
     (for d < D) one draft call on levels 1..d with the tree's ancestor mask gives their q. So a
     depth-D tree costs D draft calls, like a chain of gamma = D tokens.
  3. One target call on the whole tree (root + N nodes, positions pos + depth, ancestor mask).
  4. Verification: `walk_tree` with the node kernel matching how siblings were drawn (iid ->
     "iid" or "kseq"; without replacement -> "without_replacement"; a greedy draft's top-k ->
     "deterministic"), or `greedy_tree` for a greedy target. Exact in all cases (verify.py).
  5. Both caches commit the accepted path (the draft only up to depth D - 1: it never ran the
     deepest level, so after a path of full depth its pending block is [x_D, y], as after a fully
     accepted chain in Leviathan et al.), staged: written when the next round reads the cache
     (`StagedCache`). The correction / bonus token y becomes pending.

`Speculative(branching=(1,) * gamma)` is standard speculative sampling (Leviathan et al. 2211.17192,
Chen et al. 2302.01318); `branching=(3, 2, 1)` a static tree whose siblings are i.i.d. (SpecInfer,
verified with kernel 2 or SpecTr's K-SEQ) or drawn without replacement by Gumbel-top-k (RSD-C,
2402.14160). `DySpec` grows a dynamic tree (2410.11744, threshold variant, section 4.4): at each
level every node proposes up to `max_children` siblings without replacement; slot j of a node of
value v has value v * (1 - sum_{i<j} q(c_i)) (the DySpec heap value, telescoped); the `widths[d]`
most valuable slots above `threshold` become the level's nodes. A node's sibling count depends only
on its own earlier siblings and independent draws, so it is a stopping time and kernel 3 is exact.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rocket.decode.engine import Ctx, Method, RoundOut, StagedCache, Stats, last_prompt_token, prefill
from rocket.decode.sampling import SamplerConfig, warp
from rocket.decode.trees import (
    ancestors,
    children,
    level_depths,
    static_ancestors,
    static_children,
    tree_widths,
)
from rocket.decode.verify import draw_noise, greedy_tree, walk_tree
from rocket.layers.cache import commit_block


@flax.struct.dataclass
class SpecState:
    cache: StagedCache  # target; the accepted path of the last round is written at the next read
    draft_cache: StagedCache
    pending: jax.Array  # [B] root of the next tree (last emitted token), at position pos
    pos: jax.Array  # [B]
    draft_pending: jax.Array  # [B, 2] tokens the draft has not ingested, left-aligned, ending with `pending`
    n_draft_pending: jax.Array  # [B] 1 or 2


@flax.struct.dataclass
class Level:
    tokens: jax.Array  # [B, W]
    parent: jax.Array  # [B, W] index into the previous level
    sib: jax.Array  # [B, W] sibling rank (proposal order)
    value: jax.Array  # [B, W] estimated acceptance value (DySpec); 1 elsewhere
    valid: jax.Array  # [B, W]


def draft_dist(logits_v: jax.Array, sampler: SamplerConfig) -> jax.Array:
    """The distribution drafts are drawn from; a greedy draft proposes top-k of its softmax."""
    return jax.nn.softmax(logits_v.astype(jnp.float32), -1) if sampler.greedy else warp(logits_v, sampler)


def propose(key: jax.Array, q_bwv: jax.Array, m: int, mode: str) -> tuple[jax.Array, jax.Array]:
    """m candidates per row of q -> (tokens[B, W, m], valid[B, W, m]) in proposal order.

    mode "top": deterministic top-m; "iid": m i.i.d. draws; "without_replacement": Gumbel-top-m
    (the perturbed order is the without-replacement sampling order).
    """
    logq = jnp.log(q_bwv)
    if mode == "iid":
        tok = jax.random.categorical(key, logq[..., None, :], axis=-1, shape=q_bwv.shape[:-1] + (m,))
        tok = tok.astype(jnp.int32)
        return tok, jnp.take_along_axis(q_bwv, tok, axis=-1) > 0
    if mode == "without_replacement":
        logq = logq + jax.random.gumbel(key, logq.shape)
    scores, tok = jax.lax.top_k(logq, m)
    return tok.astype(jnp.int32), jnp.isfinite(scores)


class _DraftTree(Method):
    """Shared init/round of draft-model tree methods; subclasses define `widths`, `expand`, `mode`."""

    needs_draft: ClassVar[bool] = True
    widths: tuple[int, ...]
    mode: str  # how siblings are drawn: "iid" | "without_replacement"
    kseq: bool = False

    @property
    def emit_width(self) -> int:
        return len(self.widths) + 1

    @property
    def block_width(self) -> int:
        return 1 + sum(self.widths)

    def rule(self, draft_sampler: SamplerConfig) -> str:
        if draft_sampler.greedy:
            return "deterministic"
        if self.mode == "iid":
            return "kseq" if self.kseq else "iid"
        return "without_replacement"

    def init(self, ctx: Ctx, prompt_bp, prompt_len_b, key, carry) -> SpecState:
        del key, carry
        b = prompt_bp.shape[0]
        out, cache = prefill(ctx.target, ctx.target.new_cache(b, ctx.max_len), prompt_bp, prompt_len_b)
        dout, dcache = prefill(ctx.draft, ctx.draft.new_cache(b, ctx.max_len), prompt_bp, prompt_len_b)
        root_b = last_prompt_token(prompt_bp, prompt_len_b)
        pend_b2 = jnp.stack([root_b, jnp.zeros_like(root_b)], axis=1)
        staged = StagedCache.empty(cache, out.new_kv, self.emit_width)
        dstaged = StagedCache.empty(dcache, dout.new_kv, max(len(self.widths) - 1, 1))
        return SpecState(staged, dstaged, root_b, prompt_len_b - 1, pend_b2, jnp.ones_like(root_b))

    def round(self, ctx: Ctx, s: SpecState, key: jax.Array, active_b: jax.Array) -> RoundOut:
        b = s.pending.shape[0]
        n_levels = len(self.widths)
        depth_n = level_depths(self.widths)
        offsets = np.concatenate([[1], 1 + np.cumsum(self.widths)])  # level d starts at offsets[d - 1]
        n_nodes = int(offsets[-1])
        keys = jax.random.split(key, n_levels + 1)
        q_of = lambda logits: draft_dist(logits, ctx.draft_sampler)
        static = self.static_tree()

        def tree_mask(hi: int, d: int) -> jax.Array:  # [B, hi, hi] ancestor mask of nodes :hi
            if static is None:
                return ancestors(parent[:, :hi], d)
            return jnp.broadcast_to(static_ancestors(static[0][:hi]), (b, hi, hi))

        # 1. The draft ingests its pending tokens; q at the root.
        first = s.pos - s.n_draft_pending + 1
        dcache = s.draft_cache.read()
        out = ctx.draft(s.draft_pending, first[:, None] + jnp.arange(2), dcache)
        dcache = commit_block(dcache, out.new_kv, jnp.where(active_b, s.n_draft_pending, 0))
        root_logits = jnp.take_along_axis(out.logits, (s.n_draft_pending - 1)[:, None, None], axis=1)
        q_level = q_of(root_logits)  # [B, 1, V]

        # 2. Grow the tree level by level.
        tokens = jnp.zeros((b, n_nodes), jnp.int32).at[:, 0].set(s.pending)
        parent = jnp.full((b, n_nodes), -1, jnp.int32)
        sib = jnp.zeros((b, n_nodes), jnp.int32)
        valid = jnp.ones((b, n_nodes), bool)
        q_nv = jnp.zeros((b, n_nodes, q_level.shape[-1]), jnp.float32).at[:, :1].set(q_level)
        value, level_valid = jnp.ones((b, 1)), jnp.ones((b, 1), bool)
        last_out = None
        for d in range(1, n_levels + 1):
            lo, hi = int(offsets[d - 1]), int(offsets[d])
            lvl = self.expand(keys[d - 1], q_level, value, level_valid, d - 1, ctx.draft_sampler.greedy)
            prev_lo = 0 if d == 1 else int(offsets[d - 2])
            tokens = tokens.at[:, lo:hi].set(lvl.tokens)
            parent = parent.at[:, lo:hi].set(prev_lo + lvl.parent)
            sib = sib.at[:, lo:hi].set(lvl.sib)
            valid = valid.at[:, lo:hi].set(lvl.valid)
            value, level_valid = lvl.value, lvl.valid
            if d < n_levels:  # q at this level's nodes: draft call on levels 1..d (the root is cached)
                anc = tree_mask(hi, d)[:, 1:, 1:]
                last_out = ctx.draft(tokens[:, 1:hi], s.pos[:, None] + depth_n[1:hi], dcache, anc)
                q_level = q_of(last_out.logits[:, lo - 1 : hi - 1])
                q_nv = q_nv.at[:, lo:hi].set(q_level)

        # 3. One target call on the whole tree.
        anc_bnn = tree_mask(n_nodes, n_levels)
        cache = s.cache.read()
        tout = ctx.target(tokens, s.pos[:, None] + depth_n, cache, anc_bnn)

        # 4. Verify.
        if ctx.sampler.greedy:
            pred_bn = jnp.argmax(tout.logits, -1).astype(jnp.int32)
            verify = lambda *a: greedy_tree(*a, depth_n)
            path, n_acc, emitted = jax.vmap(verify)(pred_bn, tokens, parent, valid, anc_bnn)
        else:
            p_bnv = warp(tout.logits, ctx.sampler)
            max_children = max(self.max_children_per_level())
            if static is None:
                kids = children(parent, sib, valid, max_children)
            else:  # the static tree's children, less the invalid candidates
                kids_nc = static_children(*static, max_children)
                kids = jnp.where(valid[:, np.maximum(kids_nc, 0)] & (kids_nc >= 0), kids_nc, -1)
            rule = self.rule(ctx.draft_sampler)
            u, g = draw_noise(keys[-1], (b, n_levels + 1), max_children, p_bnv.shape[-1])
            verify = lambda *a: walk_tree(rule, *a, depth_n)
            path, n_acc, emitted = jax.vmap(verify)(u, g, p_bnv, q_nv, tokens, kids, anc_bnn)

        # 5. Commit (stage) the accepted path; y becomes pending.
        n_keep = jnp.where(active_b, n_acc, 0)
        staged = StagedCache(cache, tout.new_kv.take(path), jnp.where(active_b, n_acc + 1, 0))
        dstaged = StagedCache(dcache, s.draft_cache.block, jnp.zeros_like(n_keep))
        if last_out is not None:  # the draft ran levels 1..D-1 (block index = node - 1)
            dpath = jnp.maximum(path[:, 1:n_levels] - 1, 0)
            dstaged = StagedCache(dcache, last_out.new_kv.take(dpath), jnp.minimum(n_keep, n_levels - 1))
        y_b = jnp.take_along_axis(emitted, n_acc[:, None], axis=1)[:, 0]
        full_b = n_acc == n_levels  # the deepest drafted token was never fed to the draft
        x_deep_b = jnp.take_along_axis(tokens, path[:, -1:], axis=1)[:, 0]
        dpend = jnp.where(full_b[:, None], jnp.stack([x_deep_b, y_b], 1), jnp.stack([y_b, y_b * 0], 1))
        keep = lambda new, old: jnp.where(active_b.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
        new = SpecState(
            staged,
            dstaged,
            keep(y_b, s.pending),
            s.pos + jnp.where(active_b, n_acc + 1, 0),
            keep(dpend, s.draft_pending),
            keep(jnp.where(full_b, 2, 1), s.n_draft_pending),
        )
        tested = jnp.minimum(n_acc + 1, n_levels)  # depths examined: the accepted ones + the rejection
        stats = Stats.per_round(b, 1, n_levels, jnp.sum(valid[:, 1:], axis=1), n_acc, tested)
        return RoundOut(new, emitted, n_acc + 1, stats)

    def carry(self, state: SpecState) -> None:
        return None

    def static_tree(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(parent[N], sibling rank[N]) when the tree's shape is fixed in advance, else None."""
        return None


@dataclasses.dataclass(frozen=True)
class Speculative(_DraftTree):
    """Chain (branching all ones; gamma = len(branching)) or static-tree speculative sampling.

    branching[d]: children per node at depth d. sampling: "iid" (verified with kernel 2, or with
    SpecTr's K-SEQ when kseq=True) or "without_replacement" (RSD-C, kernel 3).
    """

    branching: tuple[int, ...] = (1, 1, 1, 1)
    sampling: str = "iid"
    kseq: bool = False

    def __post_init__(self):
        if not self.branching or min(self.branching) < 1:
            raise ValueError(f"branching must be a non-empty tuple of positive ints, got {self.branching}")
        if self.sampling not in ("iid", "without_replacement"):
            raise ValueError(f"sampling must be 'iid' or 'without_replacement', got {self.sampling!r}")

    @property
    def mode(self) -> str:
        return self.sampling

    @property
    def widths(self) -> tuple[int, ...]:
        return tree_widths(self.branching)

    def max_children_per_level(self) -> tuple[int, ...]:
        return self.branching

    def static_tree(self) -> tuple[np.ndarray, np.ndarray]:
        """Level d's nodes are the branching[d - 1] children of each level d - 1 node, in order."""
        starts = np.concatenate([[0, 1], 1 + np.cumsum(self.widths)])  # level d starts at starts[d]
        parent, sib = [np.array([-1])], [np.array([0])]
        for d, m in enumerate(self.branching, start=1):
            w_prev = starts[d] - starts[d - 1]
            parent.append(starts[d - 1] + np.repeat(np.arange(w_prev), m))
            sib.append(np.tile(np.arange(m), w_prev))
        return np.concatenate(parent).astype(np.int32), np.concatenate(sib).astype(np.int32)

    def expand(self, key, q_bwv, value_bw, valid_bw, d: int, greedy_draft: bool) -> Level:
        m = self.branching[d]
        tok, ok = propose(key, q_bwv, m, "top" if greedy_draft else self.sampling)
        b, w = valid_bw.shape
        return Level(
            tokens=tok.reshape(b, w * m),
            parent=jnp.broadcast_to(jnp.repeat(jnp.arange(w, dtype=jnp.int32), m), (b, w * m)),
            sib=jnp.broadcast_to(jnp.tile(jnp.arange(m, dtype=jnp.int32), w), (b, w * m)),
            value=jnp.ones((b, w * m)),
            valid=(ok & valid_bw[:, :, None]).reshape(b, w * m),
        )


@dataclasses.dataclass(frozen=True)
class DySpec(_DraftTree):
    """Dynamic tree (DySpec threshold variant): widths[d] = node budget at depth d + 1."""

    widths: tuple[int, ...] = (4, 8, 8, 8)
    max_children: int = 4
    threshold: float = 1.0 / 32

    mode: ClassVar[str] = "without_replacement"

    def __post_init__(self):
        caps = (self.max_children,) + tuple(w * self.max_children for w in self.widths[:-1])
        if not self.widths or any(not 1 <= w <= cap for w, cap in zip(self.widths, caps)):
            raise ValueError(
                f"widths {self.widths} must be positive with widths[0] <= max_children and "
                f"widths[d] <= widths[d - 1] * max_children (max_children={self.max_children})"
            )
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")

    def max_children_per_level(self) -> tuple[int, ...]:
        return (self.max_children,) * len(self.widths)

    def expand(self, key, q_bwv, value_bw, valid_bw, d: int, greedy_draft: bool) -> Level:
        b, w = valid_bw.shape
        c = self.max_children
        tok_bwc, ok_bwc = propose(key, q_bwv, c, "top" if greedy_draft else "without_replacement")
        qc_bwc = jnp.take_along_axis(q_bwv, tok_bwc, axis=-1)
        slot_bwc = value_bw[:, :, None] * (1.0 - (jnp.cumsum(qc_bwc, -1) - qc_bwc))
        ok_bwc = ok_bwc & valid_bw[:, :, None] & (slot_bwc > self.threshold)
        # The most valuable slots; a node's slot values decrease with j (ties: lower index first),
        # so each node keeps a prefix of its sibling sequence.
        _, idx = jax.lax.top_k(jnp.where(ok_bwc, slot_bwc, -1.0).reshape(b, w * c), self.widths[d])
        pick = lambda x_bwc: jnp.take_along_axis(x_bwc.reshape(b, w * c), idx, axis=1)
        parent = (idx // c).astype(jnp.int32)
        return Level(
            tokens=pick(tok_bwc),
            parent=parent,
            sib=(idx % c).astype(jnp.int32),
            value=jnp.take_along_axis(value_bw, parent, axis=1) * pick(qc_bwc),
            valid=pick(ok_bwc),
        )
