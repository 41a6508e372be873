"""Token routing primitives shared by Mixture-of-Depths, p-MoD and Mixture-of-Recursions.

Expert-choice routing with one "expert" (a block) and a no-op alternative:

  idx[B, k] = sort(top_k(scores[B, T], k))        k = max(1, floor(c * T)), static under jit
  x_sel[B, k, D] = gather(x, idx)                  positions travel with the tokens (RoPE)
  y = scatter_add(x, idx, gate * delta)            only the k selected rows change
                                                   (`scatter` replaces rows instead)

Because `idx` is sorted, the causal mask over the gathered order is the causal mask over the
original positions; `gather_mask` restricts any [B, T, T] mask (segments, trees) to the gathered
tokens. Hierarchical routing (MoR) composes indices: idx_r = gather(idx_{r-1}, local_idx).

Top-k over the sequence is non-causal (whether token i is selected depends on later scores), so it
is for training only. `routing="causal"` decides per token from the router logit (trained with
`router_bce`, Raposo et al. 2024 sec. 3.5 option a) or from a stop-gradient `Predictor` (option b);
decoding and honest evaluation use it.

References: Raposo et al., "Mixture-of-Depths", arXiv 2404.02258; Zhang et al., "p-MoD", arXiv
2412.04449 (TanhNorm, progressive ratio decay); Bae et al., "Mixture-of-Recursions", arXiv 2507.10524.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.config.depth import MOD_GATES
from rocket.layers.init import kernel_init

_NEG_INF = -1e30


def capacity_to_k(capacity: float, t: int) -> int:
    """Static number of routed tokens: max(1, floor(capacity * T)); capacity in (0, 1]."""
    if not 0.0 < capacity <= 1.0:
        raise ValueError(f"capacity must be in (0, 1], got {capacity}")
    return max(1, math.floor(capacity * t))


def route_topk(scores_bt: jax.Array, k: int, valid_bt: jax.Array | None = None) -> jax.Array:
    """Indices [B, k] of the k highest scores per row, sorted ascending (int32).

    Invalid (padding) tokens score -inf, so they are chosen only when a row has fewer than k valid
    tokens; `gather(valid, idx)` flags those slots and callers zero their update.
    """
    if not 1 <= k <= scores_bt.shape[1]:
        raise ValueError(f"k must be in [1, T={scores_bt.shape[1]}], got {k}")
    scores_bt = scores_bt.astype(jnp.float32)
    if valid_bt is not None:
        scores_bt = jnp.where(valid_bt, scores_bt, _NEG_INF)
    _, idx_bk = jax.lax.top_k(scores_bt, k)
    return jnp.sort(idx_bk.astype(jnp.int32), axis=1)


def gather(x_bt: jax.Array, idx_bk: jax.Array) -> jax.Array:
    """x[B, T, ...] -> x[B, k, ...] at idx: one row-slice gather (no one-hot matmul, and not one
    scalar gather per element as `take_along_axis` with a broadcast index would lower to)."""
    rows_b1 = jnp.arange(x_bt.shape[0])[:, None]
    return x_bt[rows_b1, idx_bk]


def scatter_add(x_bt: jax.Array, idx_bk: jax.Array, upd_bk: jax.Array) -> jax.Array:
    """x[B, T, ...] with upd[B, k, ...] added at rows idx (indices are unique within a row)."""
    rows_b1 = jnp.arange(x_bt.shape[0])[:, None]
    return x_bt.at[rows_b1, idx_bk].add(upd_bk.astype(x_bt.dtype), unique_indices=True)


def scatter(x_bt: jax.Array, idx_bk: jax.Array, rows_bk: jax.Array) -> jax.Array:
    """x[B, T, ...] with rows idx replaced by rows[B, k, ...]."""
    rows_b1 = jnp.arange(x_bt.shape[0])[:, None]
    return x_bt.at[rows_b1, idx_bk].set(rows_bk.astype(x_bt.dtype), unique_indices=True)


def selected_mask(idx_bk: jax.Array, t: int) -> jax.Array:
    """bool[B, T]: True at the routed tokens."""
    return scatter_add(jnp.zeros((idx_bk.shape[0], t), jnp.int32), idx_bk, jnp.ones_like(idx_bk)) > 0


def gather_mask(mask_btt: jax.Array, idx_bk: jax.Array) -> jax.Array:
    """A [B, T, T] attention mask restricted to the routed tokens -> [B, k, k]."""
    rows_bkt = gather(mask_btt, idx_bk)
    return jnp.take_along_axis(rows_bkt, idx_bk[:, None, :], axis=2)


def apply_gate(logits: jax.Array, kind: str, alpha: float = 1.0) -> jax.Array:
    """Router weight from a router logit r (float32).

    raw:      r                 (MoD paper: unbounded, multiplies the block's delta)
    sigmoid:  alpha * sigmoid(r) (MoR: alpha = 0.1)
    tanhnorm: alpha * tanh(r) + 1 (p-MoD: alpha = 0.2; equals 1 at a zero-initialised router)
    """
    if kind == "raw":
        return logits
    if kind == "sigmoid":
        return alpha * jax.nn.sigmoid(logits)
    if kind == "tanhnorm":
        return alpha * jnp.tanh(logits) + 1.0
    raise ValueError(f"unknown gate {kind!r}; available: {MOD_GATES}")


def masked_mean(x: jax.Array, valid: jax.Array | None) -> jax.Array:
    """Mean of x over the entries where `valid` (all entries if None); 0 when nothing is valid."""
    x = x.astype(jnp.float32)
    if valid is None:
        return jnp.mean(x)
    w = jnp.broadcast_to(valid, x.shape).astype(jnp.float32)
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def router_bce(logits_bt: jax.Array, selected_bt: jax.Array, valid_bt: jax.Array | None) -> jax.Array:
    """BCE(logit, sg(1[token in top-k])) averaged over valid tokens: teaches sigmoid(logit) > 1/2
    to mean "selected", which is the causal routing rule."""
    target = jax.lax.stop_gradient(selected_bt.astype(jnp.float32))
    bce = jnp.logaddexp(0.0, logits_bt) - target * logits_bt  # -log sigmoid(l) or -log(1 - sigmoid(l))
    return masked_mean(bce, valid_bt)


def z_loss(logits_bte: jax.Array, valid_bt: jax.Array | None) -> jax.Array:
    """Router z-loss: mean over valid tokens of logsumexp(logits over the last axis)^2."""
    return masked_mean(jnp.square(jax.nn.logsumexp(logits_bte.astype(jnp.float32), axis=-1)), valid_bt)


class Router(nn.Module):
    """Linear router x[B, T, D] -> logits[B, T, E] (float32).

    `init="zeros"` is p-MoD's zero-initialised router (TanhNorm gate = 1 at init); otherwise the
    weights are N(0, std^2) (MoR: std 0.02).
    """

    out_dim: int = 1
    use_bias: bool = False
    init: str = "normal"
    std: float = 0.02
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> jax.Array:
        w_init = nn.initializers.zeros if self.init == "zeros" else nn.initializers.normal(self.std)
        w_de = self.param(
            "w",
            nn.with_logical_partitioning(w_init, ("embed", None)),
            (x_btd.shape[-1], self.out_dim),
            self.param_dtype,
        )
        logits = jnp.einsum("btd,de->bte", x_btd.astype(jnp.float32), w_de.astype(jnp.float32))
        if self.use_bias:
            b_e = self.param(
                "b",
                nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
                (self.out_dim,),
                self.param_dtype,
            )
            logits = logits + b_e.astype(jnp.float32)
        return logits


class Predictor(nn.Module):
    """Causal routing predictor q = MLP(sg(x)) -> logits[B, T] (MoD sec. 3.5 option b).

    The stop-gradient keeps its BCE loss from touching the language model."""

    hidden: int = 64
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> jax.Array:
        x = jax.lax.stop_gradient(x_btd).astype(jnp.float32)
        w1 = self.param("w1", kernel_init(("embed", None)), (x.shape[-1], self.hidden), self.param_dtype)
        w2 = self.param("w2", kernel_init((None, None)), (self.hidden, 1), self.param_dtype)
        return (nn.silu(x @ w1) @ w2)[..., 0]


def merge_router_extras(extras: list[tuple[str, dict]]) -> dict[str, dict[str, jax.Array]]:
    """Per-layer router outputs -> the model's aux entries.

    `extras` is [(prefix, {"aux_losses": {name: scalar}, "metrics": {name: scalar}})]: losses with
    the same name are summed over layers; metrics become "<prefix>/<name>". Empty when no layer
    routes (a dense model's aux is unchanged).
    """
    aux_losses: dict[str, jax.Array] = {}
    metrics: dict[str, jax.Array] = {}
    for prefix, extra in extras:
        for name, value in extra["aux_losses"].items():
            aux_losses[name] = aux_losses.get(name, 0.0) + value
        for name, value in extra["metrics"].items():
            metrics[f"{prefix}/{name}"] = value
    out = {}
    if aux_losses:
        out["aux_losses"] = aux_losses
    if metrics:
        out["metrics"] = metrics
    return out
