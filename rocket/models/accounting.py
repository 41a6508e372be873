"""Analytic parameter and FLOP counts (used for MFU and for iso-FLOP comparisons).

FLOPs count a multiply-add as 2. Per token, the forward pass of the dense decoder costs

  2 * N_matmul                       (every weight matrix, including the LM head)
  + 2 * 2 * L * H * D_h * ctx        (q k^T and p v over `ctx` visible keys)

with ctx = (seq_len + 1) / 2 for causal training (each query sees itself and its past: the
average over positions; MaxText's convention since it halved causal attention FLOPs). Training
(forward + backward) is 3x the forward pass. Remat recomputation is not counted, so this is
"model FLOPs" (MFU), not hardware FLOPs (HFU). Embedding lookups cost no FLOPs.

TokenFormer (`projection.kind="pattention"`): a Pattention d_in -> d_out with n tokens holds n (d_in + d_out)
parameters and costs 2 n (d_in + d_out) FLOPs per token (scores and output; the normalisation is
elementwise and not counted), i.e. it counts like a matrix of that many parameters. Lexinvariant
embeddings have no table (unless `embedding.learned_prob > 0`) but the readout matmul against the
per-sequence matrix is counted as usual (its random generation is not).

A registered (user) projection kind is counted from its parameter tree (one block's projection and
FFN parameters, by `jax.eval_shape` of its init) at 2 FLOPs per parameter per token: exact for any
linear map, an estimate for anything else.

Adaptive depth (top-k routing, as trained): a layer application that processes k of the T tokens
costs k / T of the matmuls per token and sees ctx = (k + 1) / 2 keys (attention x (k / T)^2 in
total). MoD layers route k = max(1, floor(c T)); MoR expert-choice recursion r routes k_r over its
m shared layers; token-choice and plain recursion run every token (they compute all and mask).
With MoR recursive KV sharing (`mor.kv="share"`) recursions r >= 1 skip the K and V projections and
their k_r queries see ctx = (T + 1) / 2 keys of recursion 0 (attention x k_r / T).
Routers cost 2 D E per token they score (E outputs), a causal predictor 2 (D h + h).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rocket.config import ModelConfig
from rocket.models.mor import recursion_capacities
from rocket.models.transformer import Block
from rocket.routing import capacity_to_k

_ANALYTIC_PROJECTIONS = ("dense", "pattention")


@functools.lru_cache(maxsize=64)
def _counted_layer_params(cfg: ModelConfig) -> tuple[int, int]:
    """(projection + FFN parameters of one block, of which K and V projections), by eval_shape."""
    h = jnp.zeros((1, 2, cfg.d_model), jnp.dtype(cfg.dtype))
    pos, mask = jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2, 2), bool)
    shapes = jax.eval_shape(lambda: Block(cfg).init(jax.random.key(0), h, pos, mask, None))["params"]
    size = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    attn = shapes["attn"]
    return size(attn) + size(shapes["mlp"]), size(attn.get("wk", {})) + size(attn.get("wv", {}))


def _kv_projection_params(cfg: ModelConfig) -> int:
    """Parameters of a layer's K and V projections (skipped by MoR shared-KV recursions)."""
    if cfg.projection.kind not in _ANALYTIC_PROJECTIONS:
        return _counted_layer_params(cfg)[1]
    d, hkv = cfg.d_model, cfg.n_kv_heads * cfg.resolved_head_dim
    return cfg.resolved_n_param_tokens * 2 * (d + hkv) if cfg.projection.kind == "pattention" else 2 * d * hkv


def _layer_matmul_params(cfg: ModelConfig) -> int:
    if cfg.projection.kind not in _ANALYTIC_PROJECTIONS:
        return _counted_layer_params(cfg)[0]
    d, dh, f = cfg.d_model, cfg.resolved_head_dim, cfg.resolved_d_ff
    if cfg.projection.kind == "pattention":
        hq, hkv = cfg.n_heads * dh, cfg.n_kv_heads * dh
        attn = cfg.resolved_n_param_tokens * ((d + hq) + 2 * (d + hkv) + (hq + d))
        return attn + cfg.resolved_n_param_tokens_ffn * 2 * d
    attn = d * dh * (cfg.n_heads + 2 * cfg.n_kv_heads) + cfg.n_heads * dh * d
    mlp = 3 * d * f
    return attn + mlp


def _router_params(cfg: ModelConfig) -> int:
    """Router (and causal predictor) parameters of the MoD layers or the MoR stack."""
    d, h = cfg.d_model, cfg.router.predictor_hidden
    predictor = d * h + h if cfg.router.causal == "predictor" else 0
    if cfg.mor.enabled:
        if cfg.mor.router == "expert":
            return cfg.mor.recursions * (d + predictor)
        return d * cfg.mor.recursions if cfg.mor.router == "token" else 0
    n_mod = sum(c is not None for c in cfg.layer_capacities)
    return n_mod * (d + (1 if cfg.mod.gate == "tanhnorm" else 0) + predictor)


def _applications(cfg: ModelConfig, seq_len: int) -> list[tuple[float, float, bool]]:
    """(fraction of tokens, visible keys per query, projects K/V) of every layer application, top-k."""
    full = (1.0, (seq_len + 1) / 2, True)
    frac = lambda c: capacity_to_k(c, seq_len) / seq_len
    routed = lambda c: (frac(c), (capacity_to_k(c, seq_len) + 1) / 2, True)
    if not cfg.mor.enabled:
        return [full if c is None else routed(c) for c in cfg.layer_capacities]
    middle, m = cfg.mor.unique_edge_layers // 2, cfg.mor_layers_per_recursion
    caps = (
        recursion_capacities(cfg.mor.recursions, gate_only=cfg.mor.gate_only)
        if cfg.mor.router == "expert"
        else [1.0] * cfg.mor.recursions
    )
    shared_kv = lambda c: (frac(c), (seq_len + 1) / 2, False)  # queries against recursion 0's keys
    recs = [routed(c) if r == 0 or cfg.mor.kv == "recursion" else shared_kv(c) for r, c in enumerate(caps)]
    return [full] * middle + [app for app in recs for _ in range(m)] + [full] * middle


def _router_flops(cfg: ModelConfig, seq_len: int) -> float:
    """Forward router FLOPs per token (each router scores the tokens that reach it)."""
    d, h = cfg.d_model, cfg.router.predictor_hidden
    predictor = 2 * (d * h + h) if cfg.router.causal == "predictor" else 0
    if not cfg.mor.enabled:
        return sum(2 * d + predictor for c in cfg.layer_capacities if c is not None)
    if cfg.mor.router == "token":
        return 2 * d * cfg.mor.recursions
    if cfg.mor.router == "none":
        return 0.0
    reached = [1.0] + [
        capacity_to_k(c, seq_len) / seq_len
        for c in recursion_capacities(cfg.mor.recursions, gate_only=cfg.mor.gate_only)
    ]
    return sum((2 * d + predictor) * frac for frac in reached[: cfg.mor.recursions])


def param_count(cfg: ModelConfig, *, include_embedding: bool = True) -> int:
    """Number of parameters of `Transformer(cfg)` (equals the size of its param tree)."""
    d = cfg.d_model
    per_layer = _layer_matmul_params(cfg) + 2 * d  # + two RMSNorm scales
    total = cfg.unique_layers * per_layer + d + _router_params(cfg)  # + final norm
    if include_embedding:
        has_table = cfg.embedding.kind == "learned" or cfg.embedding.learned_prob > 0
        total += cfg.vocab_size * d * (int(has_table) + (0 if cfg.tie_embeddings else 1))
    elif not cfg.tie_embeddings:
        total += cfg.vocab_size * d  # the untied LM head is a matmul, not a lookup
    return total


def flops_per_token(cfg: ModelConfig, seq_len: int, *, training: bool = True) -> float:
    """Model FLOPs per token for a causal sequence of `seq_len` tokens (see module docstring)."""
    per_key = 2 * 2 * cfg.n_heads * cfg.resolved_head_dim  # q k^T and p v, per query and key
    kv_params = _kv_projection_params(cfg)
    layers = sum(
        frac * (2 * (_layer_matmul_params(cfg) - (0 if kv else kv_params)) + per_key * ctx)
        for frac, ctx, kv in _applications(cfg, seq_len)
    )
    forward = layers + 2 * cfg.vocab_size * cfg.d_model + _router_flops(cfg, seq_len)
    return 3 * forward if training else forward
