"""Mixture-of-Depths block (Raposo et al., arXiv 2404.02258) with p-MoD's options (arXiv 2412.04449).

A MoD layer wraps a standard block B (`block_cls`, the dense `Block`; so every attention and
projection kind composes with it).
A linear router scores each token, r = w^T x (+ b), and the gate is g = gate(r) ("raw": r, the
paper; "sigmoid": alpha sigmoid(r); "tanhnorm": alpha tanh(r) + 1, p-MoD). With Delta = B(x) - x
(the attention and MLP residual deltas of the block):

  routing="topk" (training):  k = max(1, floor(c T)), idx = sort(top_k(r, k)) per row,
      selected:  y_i = x_i + g_i Delta_i        (B runs on the k gathered tokens only: attention
                                                 among them, causal in gathered order, RoPE at
                                                 their original positions)
      skipped:   y_i = x_i,  or  g_i x_i with STRing (p-MoD)
  routing="causal" (decoding, honest evaluation): token i takes the block iff its causal logit
      is > 0: the router logit (trained by BCE against top-k membership) or a stop-gradient
      predictor's (router.causal="predictor"). Capacity is not enforced. Shapes stay static by
      running B on all T tokens with keys restricted to the selected ones, so this mode saves no
      FLOPs (the cost of a dense layer plus the router), except that B is skipped entirely
      (`lax.cond`) when no token of the batch is selected, the common case in batch-1 decoding.
      Skipped tokens write no K/V (valid=False).

Top-k routing is non-causal: whether token i is selected depends on later tokens' scores, so
never report top-k perplexity as language-model perplexity. With capacity 1 every token is
selected in both modes, so with a unit gate (tanhnorm at its zero init) the layer is exactly B.

The routed rows are written back with a scatter (set) of g y + (1 - g) x = x + g Delta, so a unit
gate reproduces the dense block bit for bit.

Gate placement: the MoD paper's y = x + g (attention + MLP deltas). p-MoD's code weights only the
MLP delta of kept tokens (x + a + g m); here its TanhNorm and STRing are applied with MoD's
placement, so the wrapped block stays a standard `Block`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.config import ModelConfig
from rocket.layers.cache import LayerCache
from rocket.routing import (
    Predictor,
    Router,
    apply_gate,
    capacity_to_k,
    gather,
    gather_mask,
    masked_mean,
    route_topk,
    router_bce,
    scatter,
    selected_mask,
)


def causal_logits(
    cfg: ModelConfig, x_btd: jax.Array, router_logits_bt: jax.Array, name: str = "predictor"
) -> jax.Array:
    """The logit whose sign is the causal routing decision: the router's or a predictor's.

    Call from inside a compact module (the predictor becomes its submodule `name`)."""
    if cfg.router.causal == "predictor":
        return Predictor(cfg.router.predictor_hidden, jnp.dtype(cfg.param_dtype), name=name)(x_btd)
    return router_logits_bt


def scatter_kv(kv_bk: tuple[jax.Array, jax.Array], idx_bk: jax.Array, t: int):
    """K/V of the routed tokens [B, k, H, D] placed back at their block rows -> [B, T, H, D]."""
    return tuple(scatter(jnp.zeros((x.shape[0], t) + x.shape[2:], x.dtype), idx_bk, x) for x in kv_bk)


def _mix(gate_bt: jax.Array, y_btd: jax.Array, x_btd: jax.Array) -> jax.Array:
    """x + g (y - x), written as g y + (1 - g) x so that g = 1 gives exactly y (the dense block)."""
    g = gate_bt[..., None]
    return (g * y_btd + (1.0 - g) * x_btd).astype(x_btd.dtype)


class MoDBlock(nn.Module):
    """(h[B, T, D], ...) -> (h, (k, v)[B, T, H_kv, D_h], kv_valid[B, T], extras). See module doc.

    `extras` holds "aux_losses" (already scaled by `mod.aux_coef`) and "metrics" (selected
    fraction; in top-k mode also the causal rule's agreement with top-k and its selected fraction).
    """

    cfg: ModelConfig
    capacity: float
    block_cls: type[nn.Module]  # the wrapped block, e.g. rocket.models.transformer.Block
    routing: str = "topk"

    @nn.compact
    def __call__(
        self,
        h_btd: jax.Array,
        positions_bt: jax.Array,
        mask_btt: jax.Array,
        cache: LayerCache | None,
        valid_bt: jax.Array,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array], jax.Array, dict[str, Any]]:
        cfg = self.cfg
        t = h_btd.shape[1]
        tanhnorm = cfg.mod.gate == "tanhnorm"
        router = Router(use_bias=tanhnorm, init="zeros" if tanhnorm else "normal", name="router")
        logits_bt = router(h_btd)[..., 0]  # float32
        gate_bt = apply_gate(logits_bt, cfg.mod.gate, cfg.mod.gate_alpha)
        decide_bt = causal_logits(cfg, h_btd, logits_bt)
        causal_bt = valid_bt & ((decide_bt > 0) if self.capacity < 1.0 else True)
        block = self.block_cls(cfg, name="block")
        metrics: dict[str, jax.Array] = {}
        aux_losses: dict[str, jax.Array] = {}

        if self.routing == "topk":
            idx_bk = route_topk(logits_bt, capacity_to_k(self.capacity, t), valid_bt)
            x_bkd = gather(h_btd, idx_bk)
            y_bkd, kv_bk = block(x_bkd, gather(positions_bt, idx_bk), gather_mask(mask_btt, idx_bk), cache)
            g_bk = gather(gate_bt, idx_bk) * gather(valid_bt, idx_bk)  # padding slots change nothing
            selected_bt = selected_mask(idx_bk, t) & valid_bt
            h_btd = scatter(self._skip(h_btd, gate_bt, selected_bt), idx_bk, _mix(g_bk, y_bkd, x_bkd))
            kv = scatter_kv(kv_bk, idx_bk, t) if cache is not None else kv_bk
            name = "mod_predictor_bce" if cfg.router.causal == "predictor" else "mod_router_bce"
            aux_losses[name] = cfg.mod.aux_coef * router_bce(decide_bt, selected_bt, valid_bt)
            metrics["causal_acc"] = masked_mean(causal_bt == selected_bt, valid_bt)
            metrics["causal_selected"] = masked_mean(causal_bt, valid_bt)
        else:
            selected_bt = causal_bt
            kv_shape = h_btd.shape[:2] + (cfg.n_kv_heads, cfg.resolved_head_dim)

            def run(_, x_btd):
                return block(x_btd, positions_bt, mask_btt & selected_bt[:, None, :], cache)

            def skip(_, x_btd):  # no token of the batch takes the layer (B = 1 decoding skips often)
                return x_btd, (jnp.zeros(kv_shape, cfg.dtype), jnp.zeros(kv_shape, cfg.dtype))

            if self.capacity < 1.0:
                y_btd, kv = nn.cond(jnp.any(selected_bt), run, skip, self, h_btd)
            else:  # every valid token takes the layer
                y_btd, kv = run(self, h_btd)
            routed_btd = _mix(gate_bt, y_btd, h_btd)
            h_btd = jnp.where(selected_bt[..., None], routed_btd, self._skip(h_btd, gate_bt, selected_bt))
        metrics["selected"] = masked_mean(selected_bt, valid_bt)
        return h_btd, kv, selected_bt, {"aux_losses": aux_losses, "metrics": metrics}

    def _skip(self, h_btd: jax.Array, gate_bt: jax.Array, selected_bt: jax.Array) -> jax.Array:
        """Skipped tokens: unchanged, or scaled by their gate (p-MoD STRing)."""
        if not self.cfg.mod.string:
            return h_btd
        scaled_btd = (gate_bt[..., None] * h_btd).astype(h_btd.dtype)
        return jnp.where(selected_bt[..., None], h_btd, scaled_btd)
