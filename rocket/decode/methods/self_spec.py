"""Self-speculative decoding: the model drafts with a shallow path of itself and verifies with its
full depth, in one KV cache, exactly the target's law (chains here; static token trees with
`branching=(b_1, ..., b_D)` in `rocket.decode.methods.self_tree`; greedy or sampled).

Draft paths (a skip set over the model's stages, `rocket.models.exits.DraftPlan`):
  `SelfExit(exit_layer=k)`   early exit after stage k through the shared final norm and LM head
                             (LayerSkip, Elhoushi et al. 2024, arXiv 2404.16710, section 4)
  `SelfSkip(skip=(i, ...))`  skip a set of stages (Draft & Verify, Zhang et al. 2023, arXiv 2309.08168)
  `SelfMoD()`                a Mixture-of-Depths model with every routed layer skipped
  `SelfMoR(recursions=r)`    a Mixture-of-Recursions model running only its first r recursions

One round (gamma drafts, pending token x_0 at position pos):
  1. for i = 0 .. gamma: the draft feeds x_i through the shared prefix (stages before the first
     skipped one), writing their K/V straight into the model's cache (speculatively), then through
     its private stages (K/V into the draft's own small cache) and, for i < gamma, the LM head:
     q_{i+1} = warp(logits), x_{i+1} ~ q_{i+1} (argmax for a greedy draft). Step gamma only
     completes x_gamma's K/V (no head), so a fully accepted chain leaves both caches complete.
  2. One verifier call on [x_0 .. x_gamma] that starts at the first skipped stage from the hidden
     states the draft stored there: the shared prefix's K/V are written once and reused, the
     verifier computes only the remaining stages (the saving shows in its compiled FLOPs).
  3. Acceptance with `rocket.decode.verify` on the chain (kernel "iid" for a sampled draft, the
     point-proposal kernel for a greedy draft, `greedy_tree` for a greedy target): exact.
  4. The verifier's K/V of the accepted tokens are committed to the remaining layers, and both
     caches are rolled back to pos + n_accepted + 1, so every layer holds exactly the accepted
     history (the cache equals a fresh full forward's). The correction / bonus token is pending.

Stats: one target (verifier) call and gamma + 1 draft calls per round; the depth fractions of the
calls (`cost_fractions`) turn them into target-equivalent calls per token.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rocket.config import ModelConfig
from rocket.decode.engine import Ctx, Method, RoundOut, Stats, last_prompt_token, prefill
from rocket.decode.methods.speculative import draft_dist, propose
from rocket.decode.sampling import warp
from rocket.decode.trees import static_ancestors, tree_widths
from rocket.decode.verify import draw_noise, greedy_tree, walk_tree
from rocket.layers import make_block_mask
from rocket.layers.cache import Cache, KVBlock, commit_block, init_cache, rollback
from rocket.models.exits import DraftPlan, embed_tokens, model_stages, readout, run_stages


@flax.struct.dataclass
class SelfSpecState:
    cache: Cache  # the model's cache, every layer
    private: Cache  # the draft's own K/V for its stages after the first skipped one (maybe 0 layers)
    pending: jax.Array  # [B] last emitted token, in no cache yet
    pos: jax.Array  # [B] its position


def commit_layers(
    cache: Cache,
    start: int,
    kvs: list,
    valids: list,
    positions_bt: jax.Array,
    n: jax.Array,
    path_bp: jax.Array | None = None,
) -> Cache:
    """`commit_block` into cache layers [start, start + len(kvs)) only (the others untouched); with
    `path_bp` (block indices of a tree's root-to-node path), `commit_path` instead."""
    if not kvs:
        return cache
    stop = start + len(kvs)
    block = KVBlock(
        k=jnp.stack([k for k, _ in kvs]),
        v=jnp.stack([v for _, v in kvs]),
        positions=positions_bt,
        valid=jnp.stack(valids),
    )
    block = block if path_bp is None else block.take(path_bp)
    part = lambda x: x[start:stop]
    sub = commit_block(
        Cache(part(cache.k), part(cache.v), part(cache.slot_pos), part(cache.length)), block, n
    )
    put = lambda full, new: full.at[start:stop].set(new)
    return cache.replace(
        k=put(cache.k, sub.k),
        v=put(cache.v, sub.v),
        slot_pos=put(cache.slot_pos, sub.slot_pos),
        length=put(cache.length, sub.length),
    )


def verify_forward(
    cfg: ModelConfig,
    params: Any,
    plan: DraftPlan,
    h_btd: jax.Array,
    active_bt: jax.Array,
    positions_bt: jax.Array,
    cache: Cache,
    tree_btt: jax.Array | None = None,
) -> tuple[jax.Array, list, list]:
    """The verifier call: stages [shared, n) from the hidden states h[B, T, D] the draft stored at
    the first skipped stage, then the LM head -> (logits[B, T, V], K/V and valid masks of the
    remaining cache layers). It computes nothing of the shared prefix. `tree_btt`: a token tree's
    ancestor-or-self mask (None: a chain, causal)."""
    b, t = positions_bt.shape
    suffix = plan.stages[plan.shared :]
    mask = make_block_mask(None, tree_btt, t, b)
    h_btd, _, kvs, valids = run_stages(cfg, params, suffix, h_btd, active_bt, positions_bt, mask, cache.layer)
    return readout(cfg, params, h_btd)[0], kvs, valids


def _model(ctx: Ctx) -> tuple[ModelConfig, Any]:
    return ctx.target.module.cfg, ctx.target.variables["params"]


class _SelfDraft(Method):
    """The shared chain round; subclasses define `gamma` and `skip_set(cfg)`."""

    gamma: int
    branching: tuple[int, ...]

    @property
    def emit_width(self) -> int:
        return self.gamma + 1

    @property
    def block_width(self) -> int:
        return 1 + sum(tree_widths(self.branching)) if self.branching else self.gamma + 1

    @abc.abstractmethod
    def skip_set(self, cfg: ModelConfig) -> tuple[int, ...]: ...

    def plan(self, cfg: ModelConfig) -> DraftPlan:
        return DraftPlan.of(cfg, self.skip_set(cfg))

    def _check_gamma(self) -> None:
        """Validates gamma; a non-empty `branching` (e.g. (3, 2, 1) or "3,2,1") drafts a static
        token tree with branching[d] children per depth-d node and sets gamma = len(branching)."""
        branching = self.branching
        if isinstance(branching, str):
            branching = tuple(int(x) if x.strip().isdigit() else x for x in branching.split(",") if x.strip())
        branching = tuple(int(x) if isinstance(x, np.integer) else x for x in branching)
        if not all(isinstance(x, (int, np.integer)) for x in branching) or (branching and min(branching) < 1):
            raise ValueError(f"branching must be a tuple of positive ints, got {branching}")
        object.__setattr__(self, "gamma", len(branching) or self.gamma)
        # all ones is the chain of gamma = len(branching): the chain round
        object.__setattr__(self, "branching", () if all(x == 1 for x in branching) else branching)
        if self.gamma < 1:
            raise ValueError(f"gamma (draft length) must be >= 1, got {self.gamma}")

    def cost_fractions(self, cfg: ModelConfig) -> tuple[float, float]:
        """(draft call, verifier call) cost as fractions of a full-depth call, counted in stages."""
        plan = self.plan(cfg)
        n = len(plan.stages)
        return (plan.shared + len(plan.private)) / n, (n - plan.shared) / n

    def init(self, ctx: Ctx, prompt_bp, prompt_len_b, key, carry) -> SelfSpecState:
        del key, carry
        cfg, params = _model(ctx)
        plan = self.plan(cfg)
        b, p = prompt_bp.shape
        empty = ctx.target.new_cache(b, ctx.max_len)
        spec = ctx.target.spec
        n_private = len(plan.cache_layers("private"))
        private = init_cache(n_private, b, ctx.max_len, spec.n_kv_heads, spec.head_dim, spec.dtype)
        if n_private:  # the draft's own layers see the prompt through the draft path
            positions_bp = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
            _, _, kvs, valids = self._draft_body(cfg, params, plan, prompt_bp, positions_bp, empty, private)
            private = commit_layers(private, 0, kvs[1], valids[1], positions_bp, prompt_len_b - 1)
        _, cache = prefill(ctx.target, empty, prompt_bp, prompt_len_b)
        root_b = last_prompt_token(prompt_bp, prompt_len_b)
        return SelfSpecState(cache, private, root_b, prompt_len_b - 1)

    def _draft_body(
        self, cfg, params, plan: DraftPlan, tokens_bt, positions_bt, cache, private, tree_btt=None
    ):
        """Embedding, shared prefix, private stages -> (h at the exit, (h, active) at the first
        skipped stage, (prefix kvs, private kvs), (prefix valids, private valids)); `tree_btt` as in
        `verify_forward`."""
        b, t = tokens_bt.shape
        mask = make_block_mask(None, tree_btt, t, b)
        h = embed_tokens(cfg, params, tokens_bt)
        act = jnp.ones((b, t), bool)
        prefix = plan.stages[: plan.shared]
        h, act, kvs, valids = run_stages(cfg, params, prefix, h, act, positions_bt, mask, cache.layer)
        index = {c: j for j, c in enumerate(plan.cache_layers("private"))}
        own = [plan.stages[i] for i in plan.private]
        hd, _, pkvs, pvalids = run_stages(
            cfg, params, own, h, act, positions_bt, mask, lambda c: private.layer(index[c])
        )
        return hd, (h, act), (kvs, pkvs), (valids, pvalids)

    def round(self, ctx: Ctx, s: SelfSpecState, key: jax.Array, active_b: jax.Array) -> RoundOut:
        if self.branching:  # a static token tree (rocket.decode.methods.self_tree; imports this module)
            from rocket.decode.methods.self_tree import tree_round

            return tree_round(self, ctx, s, key, active_b)
        cfg, params = _model(ctx)
        plan = self.plan(cfg)
        b, g, t = s.pending.shape[0], self.gamma, self.gamma + 1
        keys = jax.random.split(key, t)
        step_b = active_b.astype(jnp.int32)
        mode = "top" if ctx.draft_sampler.greedy else "iid"

        def feed(cache, private, tok_b, pos_b):  # x at pos through the draft path, K/V committed
            hd, exit_hidden, kvs, valids = self._draft_body(
                cfg, params, plan, tok_b[:, None], pos_b[:, None], cache, private
            )
            cache = commit_layers(cache, 0, kvs[0], valids[0], pos_b[:, None], step_b)
            private = commit_layers(private, 0, kvs[1], valids[1], pos_b[:, None], step_b)
            return cache, private, hd, exit_hidden

        def draft(carry, key_i):  # 1. feed x_i, draw x_{i+1} ~ q_{i+1}
            cache, private, tok_b, pos_b = carry
            cache, private, hd, exit_hidden = feed(cache, private, tok_b, pos_b)
            q_bv = draft_dist(readout(cfg, params, hd)[0][:, 0], ctx.draft_sampler)
            nxt_b = propose(key_i, q_bv[:, None], 1, mode)[0][:, 0, 0]
            return (cache, private, nxt_b, pos_b + 1), (exit_hidden, q_bv, nxt_b)

        carry = (s.cache, s.private, s.pending, s.pos)
        (cache, private, last_b, _), ((h_g, act_g), q_gbv, drafts_gb) = jax.lax.scan(draft, carry, keys[:g])
        cache, private, _, (h_last, act_last) = feed(cache, private, last_b, s.pos + g)  # x_gamma's K/V

        # 2. The verifier: the remaining stages from the stored hidden states.
        tokens_bt = jnp.concatenate([s.pending[:, None], drafts_gb.T], axis=1)
        positions_bt = s.pos[:, None] + jnp.arange(t, dtype=jnp.int32)
        h_btd = jnp.concatenate([jnp.moveaxis(h_g[:, :, 0], 0, 1), h_last], axis=1)
        act_bt = jnp.concatenate([act_g[:, :, 0].T, act_last], axis=1)
        logits_btv, kvs, valids = verify_forward(cfg, params, plan, h_btd, act_bt, positions_bt, cache)

        # 3. Verify the chain (node i's child is node i + 1).
        chain = np.arange(t, dtype=np.int32)  # node depths; parents chain - 1
        anc_tt = static_ancestors(chain - 1)
        if ctx.sampler.greedy:
            pred_bt = jnp.argmax(logits_btv, -1).astype(jnp.int32)
            verify = lambda p, x: greedy_tree(p, x, chain - 1, np.ones(t, bool), anc_tt, chain)
            _, n_acc, emitted = jax.vmap(verify)(pred_bt, tokens_bt)
        else:
            p_btv = warp(logits_btv, ctx.sampler)
            q_btv = jnp.concatenate([jnp.moveaxis(q_gbv, 0, 1), jnp.zeros_like(p_btv[:, :1])], axis=1)
            kids = jnp.broadcast_to(
                jnp.where(jnp.arange(t) < g, jnp.arange(1, t + 1), -1)[:, None], (b, t, 1)
            )
            rule = "deterministic" if ctx.draft_sampler.greedy else "iid"
            u, gumbel = draw_noise(keys[-1], (b, t), 1, p_btv.shape[-1])
            verify = lambda *a: walk_tree(rule, *a, anc_tt, chain)
            _, n_acc, emitted = jax.vmap(verify)(u, gumbel, p_btv, q_btv, tokens_bt, kids.astype(jnp.int32))

        # 4. Commit the accepted tokens to the remaining layers; roll both caches back.
        n_keep = jnp.where(active_b, n_acc + 1, 0)
        start = len(plan.cache_layers("shared"))
        cache = rollback(commit_layers(cache, start, kvs, valids, positions_bt, n_keep), s.pos + n_keep)
        private = rollback(private, s.pos + n_keep)
        y_b = jnp.take_along_axis(emitted, n_acc[:, None], axis=1)[:, 0]
        new = SelfSpecState(cache, private, jnp.where(active_b, y_b, s.pending), s.pos + n_keep)
        stats = Stats.per_round(b, 1, t, g, n_acc, jnp.minimum(n_acc + 1, g))
        return RoundOut(new, emitted, n_acc + 1, stats)

    def carry(self, state: SelfSpecState) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class SelfExit(_SelfDraft):
    """Early exit after stage `exit_layer` (a layer of a dense / MoD model), LayerSkip-style."""

    exit_layer: int = 1
    gamma: int = 4
    branching: tuple[int, ...] = ()  # a static token tree (`_check_gamma`); () = a chain of gamma

    def __post_init__(self):
        self._check_gamma()

    def skip_set(self, cfg: ModelConfig) -> tuple[int, ...]:
        n = len(model_stages(cfg))
        if not 1 <= self.exit_layer < n:
            raise ValueError(
                f"exit_layer {self.exit_layer} is out of range: the model has {n} layers, use 1..{n - 1}"
            )
        return tuple(range(self.exit_layer, n))


@dataclasses.dataclass(frozen=True)
class SelfSkip(_SelfDraft):
    """Skip the stages in `skip` (Draft & Verify); `skip` may be given as "1,3"."""

    skip: tuple[int, ...] = (1,)
    gamma: int = 4
    branching: tuple[int, ...] = ()  # a static token tree (`_check_gamma`); () = a chain of gamma

    def __post_init__(self):
        self._check_gamma()
        if isinstance(self.skip, str):
            object.__setattr__(self, "skip", tuple(int(x) for x in self.skip.split(",") if x.strip()))
        object.__setattr__(self, "skip", tuple(sorted(set(int(x) for x in self.skip))))

    def skip_set(self, cfg: ModelConfig) -> tuple[int, ...]:
        return self.skip


@dataclasses.dataclass(frozen=True)
class SelfMoD(_SelfDraft):
    """A Mixture-of-Depths model drafting with every routed layer skipped."""

    gamma: int = 4
    branching: tuple[int, ...] = ()  # a static token tree (`_check_gamma`); () = a chain of gamma

    def __post_init__(self):
        self._check_gamma()

    def skip_set(self, cfg: ModelConfig) -> tuple[int, ...]:
        routed = tuple(i for i, st in enumerate(model_stages(cfg)) if st.kind == "mod")
        if not routed:
            raise ValueError(
                "self_mod needs a Mixture-of-Depths model, but this model has no routed (MoD) layers"
            )
        return routed


@dataclasses.dataclass(frozen=True)
class SelfMoR(_SelfDraft):
    """A Mixture-of-Recursions model drafting with its first `recursions` recursions only."""

    recursions: int = 1
    gamma: int = 4
    branching: tuple[int, ...] = ()  # a static token tree (`_check_gamma`); () = a chain of gamma

    def __post_init__(self):
        self._check_gamma()

    def skip_set(self, cfg: ModelConfig) -> tuple[int, ...]:
        if not cfg.mor.enabled:
            raise ValueError(
                "self_mor needs a Mixture-of-Recursions model (mor.sharing), this model has none"
            )
        n_r = cfg.mor.recursions
        if not 1 <= self.recursions < n_r:
            raise ValueError(
                f"recursions {self.recursions} is out of range: the model has {n_r}, use 1..{n_r - 1}"
            )
        stages = model_stages(cfg)
        return tuple(
            i for i, st in enumerate(stages) if st.kind == "recursion" and st.index >= self.recursions
        )
