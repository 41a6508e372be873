"""Partial-depth forwards of a rocket model: its body as an ordered list of *stages*.

Self-speculative decoding (LayerSkip, Elhoushi et al., arXiv 2404.16710; Draft & Verify, Zhang et
al., arXiv 2309.08168) drafts with a shallow path of the model itself and verifies with its full
depth. This module cuts a `Transformer`'s decoder body into stages and runs any subset of them on
the model's own parameters (no second model):

  dense / MoD     stage i = layer i (a `Block`, or a `MoDBlock` with routing="causal"), one cache layer
  MoR             "first" (middle_cycle), recursion r = 0 .. N_r - 1 (the m shared blocks with router
                  r, causal expert-choice or "none"), "last"; recursion r owns cache layers
                  first + r m .. first + (r + 1) m - 1

  h_0 = E[tokens];  (h_{i+1}, active_{i+1}) = stage_i(h_i, active_i);  logits = RMSNorm(h) W_out

`active` is MoR's running set of tokens still recursing (all valid tokens elsewhere). Running every
stage in order is exactly `Transformer.apply(..., routing="causal")` (tests/test_self_spec.py checks
it, cache and all). A draft path is a *skip set* of stages (`DraftPlan`); early exit after stage k
skips every stage >= k.

Which K/V a draft shares with the verifier: stage i computes the full model's function of the
full model's input to it only while no earlier stage was skipped, so only the stages *before the
first skipped stage* (the shared prefix) write K/V the verifier can reuse. A later stage the draft
keeps (Draft & Verify's skip sets, MoD's dense layers after a routed one, MoR's "last" block)
sees a different input than in the full model: its K/V are the draft's own (`private`) and live
in a separate small cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.config import ModelConfig
from rocket.layers import RMSNorm, make_block_mask
from rocket.layers.cache import LayerCache
from rocket.models.kinds import make_embed
from rocket.models.mod import MoDBlock, causal_logits
from rocket.models.mor import recursion_capacities
from rocket.models.scan import mod_period
from rocket.models.transformer import Block
from rocket.routing import Router

KV = tuple[jax.Array, jax.Array]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One unit of the decoder body: its kind, where its params live, the cache layers it writes."""

    kind: str  # "block" | "mod" | "recursion"
    params_path: tuple[str, ...]  # e.g. ("layers_3",), ("mor", "first"), ("mor",)
    cache_layers: tuple[int, ...]
    index: int = 0  # the entry of a scanned stack (params_path starting "layers"), or the recursion r
    capacity: float | None = None  # MoD capacity


def model_stages(cfg: ModelConfig) -> tuple[Stage, ...]:
    """The stages of a model's body, in order (module docstring); ValueError for unsupported kinds."""
    if cfg.embedding.kind != "learned":
        raise ValueError(f"partial-depth forwards need a learned embedding, got {cfg.embedding.kind!r}")
    if not cfg.mor.enabled:
        caps = cfg.layer_capacities
        if cfg.scan_layers and all(c is None for c in caps):
            return tuple(Stage("block", ("layers",), (i,), index=i) for i in range(cfg.n_layers))
        p, reps = mod_period(cfg)  # layers [0, R P) live in the scanned period (rocket.models.scan)
        return tuple(
            Stage(
                "block" if c is None else "mod",
                ("layers", f"layer_{i % p}") if i < reps * p else (f"layers_{i}",),
                (i,),
                index=i // p if i < reps * p else 0,
                capacity=c,
            )
            for i, c in enumerate(caps)
        )
    if cfg.mor.kv != "recursion" or cfg.mor.router not in ("expert", "none"):
        raise ValueError(
            f"partial-depth MoR needs mor.kv='recursion' and an 'expert' or 'none' router, got "
            f"kv={cfg.mor.kv!r}, router={cfg.mor.router!r}"
        )
    first, m = cfg.mor.unique_edge_layers // 2, cfg.mor_layers_per_recursion
    stages = [Stage("block", ("mor", "first"), (0,))] if first else []
    for r in range(cfg.mor.recursions):
        stages.append(Stage("recursion", ("mor",), tuple(range(first + r * m, first + (r + 1) * m)), index=r))
    if first:
        stages.append(Stage("block", ("mor", "last"), (cfg.n_layers - 1,)))
    return tuple(stages)


class _Recursion(nn.Module):
    """MoR recursion r under causal routing, on the "mor" params subtree (its submodule names).

    expert: g = alpha sigmoid(theta_r^T h / temp); active <- active & (causal logit > 0) unless
    c_r = 1; h <- h + g Phi'(h) on active tokens (keys masked to them). none: h <- Phi'(h)."""

    cfg: ModelConfig
    r: int

    @nn.compact
    def __call__(self, h_btd, active_bt, positions_bt, mask_btt, caches):
        cfg = self.cfg
        shared = [Block(cfg, name=f"shared_{j}") for j in range(cfg.mor_layers_per_recursion)]
        if cfg.mor.router == "expert":
            logits_bt = Router(name=f"router_{self.r}")(h_btd / cfg.mor.temp)[..., 0]
            gate_bt = cfg.mor.alpha * jax.nn.sigmoid(logits_bt)
            decide_bt = causal_logits(cfg, h_btd, logits_bt, name=f"predictor_{self.r}")
            if recursion_capacities(cfg.mor.recursions)[self.r] < 1.0:
                active_bt = active_bt & (decide_bt > 0)
        y_btd, kvs = h_btd, []
        for layer, cache in zip(shared, caches):
            y_btd, kv = layer(y_btd, positions_bt, mask_btt & active_bt[:, None, :], cache)
            kvs.append(kv)
        if cfg.mor.router == "expert":
            upd_btd = (gate_bt[..., None] * y_btd).astype(h_btd.dtype)
            y_btd = jnp.where(active_bt[..., None], h_btd + upd_btd, h_btd)
        return y_btd, active_bt, kvs


def _params_of(cfg: ModelConfig, params: Any, stage: Stage) -> Any:
    """The stage's params in the unscanned layout (scanned stacks sliced, rocket.models.scan)."""
    p = params
    for key in stage.params_path:
        p = p[key]
    if stage.params_path[0] == "layers":  # a scanned stack: entry `index` of the stacked leaves
        p = jax.tree.map(lambda x: x[stage.index], p)
    if stage.kind == "recursion" and cfg.scan_layers:  # the shared blocks stacked [m, ...]
        p = {k: v for k, v in p.items() if k != "shared"} | {
            f"shared_{j}": jax.tree.map(lambda x, j=j: x[j], p["shared"])
            for j in range(cfg.mor_layers_per_recursion)
        }
    return p


def run_stage(
    cfg: ModelConfig,
    params: Any,
    stage: Stage,
    h_btd: jax.Array,
    active_bt: jax.Array,
    positions_bt: jax.Array,
    mask_btt: jax.Array,
    caches: Sequence[LayerCache | None],
) -> tuple[jax.Array, jax.Array, list[KV], list[jax.Array]]:
    """One stage -> (h, active, K/V per cache layer, valid[B, T] per cache layer).

    `params` is the model's {"params"} tree's inner dict; `caches[j]` is the view of
    `stage.cache_layers[j]` (None without a cache)."""
    p = {"params": _params_of(cfg, params, stage)}
    if stage.kind == "block":
        h_btd, kv = Block(cfg).apply(p, h_btd, positions_bt, mask_btt, caches[0])
        return h_btd, active_bt, [kv], [jnp.ones_like(active_bt)]  # every token, recursing or not
    if stage.kind == "mod":
        mod = MoDBlock(cfg, stage.capacity, Block, "causal")
        all_bt = jnp.ones_like(active_bt)
        h_btd, kv, selected_bt, _ = mod.apply(p, h_btd, positions_bt, mask_btt, caches[0], all_bt)
        return h_btd, active_bt, [kv], [selected_bt]
    h_btd, new_active_bt, kvs = _Recursion(cfg, stage.index).apply(
        p, h_btd, active_bt, positions_bt, mask_btt, list(caches)
    )
    return h_btd, new_active_bt, kvs, [new_active_bt] * len(kvs)


def run_stages(
    cfg: ModelConfig,
    params: Any,
    stages: Sequence[Stage],
    h_btd: jax.Array,
    active_bt: jax.Array,
    positions_bt: jax.Array,
    mask_btt: jax.Array,
    cache_of: Callable[[int], LayerCache | None],
) -> tuple[jax.Array, jax.Array, list[KV], list[jax.Array]]:
    """`run_stage` over `stages` in order; `cache_of(layer)` is the view of a cache layer. Returns the
    K/V and valid masks of every cache layer of the stages, in order."""
    kvs: list[KV] = []
    valids: list[jax.Array] = []
    for stage in stages:
        caches = [cache_of(c) for c in stage.cache_layers]
        h_btd, active_bt, kv, valid = run_stage(
            cfg, params, stage, h_btd, active_bt, positions_bt, mask_btt, caches
        )
        kvs += kv
        valids += valid
    return h_btd, active_bt, kvs, valids


def embed_tokens(cfg: ModelConfig, params: Any, tokens_bt: jax.Array) -> jax.Array:
    """h_0 = E[tokens] [B, T, D]."""
    return make_embed(cfg).apply({"params": params["embed"]}, tokens_bt)


def readout(cfg: ModelConfig, params: Any, h_btd: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The shared final norm and LM head: h -> (logits[B, T, V] float32, normed h[B, T, D])."""
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    h_btd = RMSNorm(cfg.norm_eps, dtype, pdtype).apply({"params": params["final_norm"]}, h_btd)
    if cfg.tie_embeddings:
        logits_btv = make_embed(cfg).apply({"params": params["embed"]}, h_btd, method="attend")
    else:
        logits_btv = jnp.einsum(
            "btd,dv->btv", h_btd, params["unembed"].astype(dtype), preferred_element_type=jnp.float32
        )
    return logits_btv.astype(jnp.float32), h_btd


def causal_mask(b: int, t: int) -> jax.Array:
    """The in-block causal mask of a chain block (no segments, no tree)."""
    return make_block_mask(None, None, t, b)


@dataclasses.dataclass(frozen=True)
class DraftPlan:
    """A shallow draft path as a skip set over the stages (module docstring).

    shared: stages [0, shared) (every stage before the first skipped one; the verifier reuses their
    K/V and starts at stage `shared` from the draft's hidden state there). private: the stages the
    draft still runs after `shared` (their K/V are the draft's own)."""

    stages: tuple[Stage, ...]
    skip: frozenset[int]

    @classmethod
    def of(cls, cfg: ModelConfig, skip: Sequence[int]) -> DraftPlan:
        stages = model_stages(cfg)
        n = len(stages)
        bad = sorted(i for i in skip if not 0 <= i < n)
        if bad:
            raise ValueError(f"skip set {sorted(skip)} names stages {bad} outside the model's [0, {n - 1}]")
        if not skip:
            raise ValueError("the skip set is empty: the draft would be the full model")
        if len(set(skip)) == n:
            raise ValueError(f"the skip set {sorted(skip)} skips every one of the model's {n} stages")
        return cls(stages, frozenset(skip))

    @property
    def shared(self) -> int:
        return min(self.skip)

    @property
    def private(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.shared, len(self.stages)) if i not in self.skip)

    def cache_layers(self, which: str) -> tuple[int, ...]:
        """The full cache's layers of the "shared" prefix, the "suffix" (verifier) or "private" stages."""
        idx = {
            "shared": range(self.shared),
            "suffix": range(self.shared, len(self.stages)),
            "private": self.private,
        }[which]
        return tuple(c for i in idx for c in self.stages[i].cache_layers)
