"""Mixture-of-Recursions (Bae et al., arXiv 2507.10524; official code raymin0223/mixture_of_recursions).

A recursive stack reuses m shared layers Phi' = (B_1 .. B_m) for N_r recursions. Sharing
(`mor.sharing`): "cycle" unrolls Phi' N_r times (m = L / N_r); "middle_cycle" keeps a unique first
and last layer around it (m = (L - 2) / N_r). `n_layers` = L counts layer applications.

KV options (`mor.kv`):
- "recursion" (recursion-wise caching): every application computes its own K/V from its input and
  attends among the tokens active there; the cache has one K/V layer per application (L layers, in
  application order), and a deeper recursion's layer holds only its active tokens.
- "share" (recursive KV sharing): recursion r >= 1 of shared layer B_j runs no K/V projection; its
  queries attend (causal, segment-masked) to the K/V that recursion 0 of B_j computed for every valid
  token. Only those are cached: cfg.cache_layers = L - (N_r - 1) m layers (first, B_1 .. B_m, last).
  As in the official code, training runs this as "all keys, masked" (top-k: gathered queries against
  the full key length).

Routers (`mor.router`):
- "expert" (expert-choice, hierarchical). At recursion r (0-based) a linear router theta_r scores
  the tokens that survived recursion r - 1: g = alpha sigmoid(theta_r^T h / temp). The top
  k_r = max(1, floor(c_r T)) survivors go on, with c_r = (N_r - r) / N_r a fraction of the full T,
  so the token sets are nested: idx_r = gather(idx_{r-1}, local_idx). As in the official code the
  gate multiplies the whole block output (which contains its input):
      selected:  h <- h + g Phi'(h)      (= (1 + g) h + g sum(Delta));  others keep h.
  Aux loss: BCE(router logit, sg(top-k membership)) over the survivors, summed over recursions,
  times `mor.aux_coef`; optional z-loss. routing="causal": a token continues at recursion r iff it
  was active at r - 1 and its causal logit (router or stop-gradient predictor) is > 0; recursions
  with c_r = 1 take every token in both modes.
- "token" (token-choice). One router on the stack's input H^1 gives N_r scores p = alpha
  softmax(theta^T H^1 / temp) (or alpha sigmoid); depth i = argmax p. Recursion j runs (ungated) on the
  tokens with depth >= j, and a token finishing at j gets H_out = H^1 + p_i Phi'^(j)(H^1) (the
  official placement). Balancing loss sum_i f_i P_i (f_i = N_r * fraction routed to depth i, P_i =
  mean p_i) and z-loss. Causal by construction, so both routing modes are the same computation.
- "none": a plain recursive transformer (every token, every recursion, no gate).

Cost: expert-choice top-k runs each recursion on its k_r gathered tokens (projections x k_r / T,
attention x (k_r / T)^2; with KV sharing no K/V projection at r >= 1 and attention x k_r / T).
Token-choice and routing="causal" keep static shapes by running every token and masking keys to the
active ones (no FLOP saving; skipped tokens write no K/V).
Not implemented: capacity warm-up (the model call has no step), loss-free balancing.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rocket.config import ModelConfig
from rocket.layers.cache import Cache
from rocket.models.mod import causal_logits, scatter_kv
from rocket.models.scan import BLOCK_AXES, layer_range, scan_over_layers
from rocket.routing import (
    Router,
    capacity_to_k,
    gather,
    gather_mask,
    masked_mean,
    route_topk,
    router_bce,
    scatter_add,
    selected_mask,
    z_loss,
)

KV = tuple[jax.Array, jax.Array]


def recursion_capacities(n_recursions: int, *, gate_only: bool = False) -> tuple[float, ...]:
    """Expert-choice capacities c_r = (N_r - r) / N_r, r = 0 .. N_r - 1 (e.g. 1, 2/3, 1/3); all 1
    with `gate_only` (`MoRConfig.gate_only`)."""
    return tuple(1.0 if gate_only else (n_recursions - r) / n_recursions for r in range(n_recursions))


class RecursiveStack(nn.Module):
    """The MoR body: (h[B, T, D], ...) -> (h, kv per cache layer, valid[B, T] per cache layer, extras)."""

    cfg: ModelConfig
    block_cls: type[nn.Module]  # the shared layer, e.g. rocket.models.transformer.Block
    routing: str = "topk"

    @nn.compact
    def __call__(
        self,
        h_btd: jax.Array,
        positions_bt: jax.Array,
        mask_btt: jax.Array,
        cache: Cache | None,
        valid_bt: jax.Array,
        causal_ids_bt: jax.Array | None = None,
    ) -> tuple[jax.Array, list[KV], list[jax.Array], dict[str, Any]]:
        """`causal_ids_bt` (segment ids, or None): given when `mask_btt` is exactly causal AND
        same-segment, so the blocks whose mask stays so (the edge layers, every recursion of top-k
        routing: sorted gathers keep the order) may skip masked keys (`rocket.layers.attention`)."""
        cfg = self.cfg
        middle, m = cfg.mor.unique_edge_layers // 2, cfg.mor_layers_per_recursion
        if cfg.scan_layers:  # one block body per recursion (rocket.models.scan); params [m, ...]
            shared = scan_over_layers(self.block_cls, m, BLOCK_AXES)(cfg, name="shared")
        else:
            shared = [self.block_cls(cfg, name=f"shared_{j}") for j in range(m)]
        caches = [None if cache is None else cache.layer(i) for i in range(cfg.cache_layers)]
        share = cfg.mor.kv == "share"
        # recursion 0's (k, v, positions) per shared layer, or all of them stacked [m, ...] when scanned;
        # recursion 0 always runs every token (capacity 1), so they are [B, T, ...]
        kv0: list = []
        kvs: list[KV] = []
        valids: list[jax.Array] = []
        if middle:
            h_btd, kv = self.block_cls(cfg, name="first")(
                h_btd, positions_bt, mask_btt, caches[0], None, causal_ids_bt
            )
            kvs.append(kv)
            valids.append(valid_bt)

        def run(r: int, x, pos, mask, idx_bk=None, *, exact: bool = False) -> jax.Array:
            """Recursion r: the m shared layers on x[B, k, D] (k = T when idx is None); `exact`:
            `mask` is `mask_btt` restricted to the (sorted) tokens `idx_bk`, still causal + segment."""
            reuse = share and r > 0  # queries against recursion 0's K/V of all tokens: the block's
            if reuse:  # causal + segment mask, not restricted to the tokens active at r (nothing cached)
                mask = mask_btt if idx_bk is None else gather(mask_btt, idx_bk)  # [B, k, T]
            first = int(middle) + (0 if reuse else r * m)
            ids_bk = None
            if exact and not reuse and causal_ids_bt is not None:
                ids_bk = causal_ids_bt if idx_bk is None else gather(causal_ids_bt, idx_bk)
            if cfg.scan_layers:
                caches_m = layer_range(cache, first, first + m)
                x, kv_m = shared(x, pos, mask, caches_m, kv0[0] if reuse else None, ids_bk)
                layer_kvs = [jax.tree.map(lambda a, j=j: a[j], kv_m) for j in range(m)]
                if share and not reuse:
                    kv0.append((*kv_m, jnp.broadcast_to(positions_bt, (m,) + positions_bt.shape)))
            else:
                layer_kvs = []
                for j, layer in enumerate(shared):
                    x, kv = layer(x, pos, mask, caches[first + j], kv0[j] if reuse else None, ids_bk)
                    layer_kvs.append(kv)
                if share and not reuse:
                    kv0.extend((*kv, positions_bt) for kv in layer_kvs)
            if not reuse:
                kvs.extend(
                    scatter_kv(kv, idx_bk, h_btd.shape[1]) if idx_bk is not None and cache is not None else kv
                    for kv in layer_kvs
                )
            return x

        body = {"expert": self._expert, "token": self._token, "none": self._plain}[cfg.mor.router]
        h_btd, rec_valids, extras = body(run, h_btd, positions_bt, mask_btt, valid_bt)
        valids.extend(v for v in (rec_valids[:1] if share else rec_valids) for _ in range(m))
        if middle:
            h_btd, kv = self.block_cls(cfg, name="last")(
                h_btd, positions_bt, mask_btt, caches[-1], None, causal_ids_bt
            )
            kvs.append(kv)
            valids.append(valid_bt)
        return h_btd, kvs, valids, extras

    def _plain(self, run, h_btd, positions_bt, mask_btt, valid_bt):
        for r in range(self.cfg.mor.recursions):
            h_btd = run(r, h_btd, positions_bt, mask_btt, exact=True)
        return h_btd, [valid_bt] * self.cfg.mor.recursions, {"aux_losses": {}, "metrics": {}}

    def _expert(self, run, h_btd, positions_bt, mask_btt, valid_bt):
        cfg = self.cfg
        t = h_btd.shape[1]
        bce, zl = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)
        metrics: dict[str, jax.Array] = {}
        rec_valids: list[jax.Array] = []
        idx_bk: jax.Array | None = None  # survivors of the previous recursion (None = all tokens)
        active_bt = valid_bt
        for r, capacity in enumerate(recursion_capacities(cfg.mor.recursions, gate_only=cfg.mor.gate_only)):
            x_bkd = h_btd if idx_bk is None else gather(h_btd, idx_bk)
            logits_bk = Router(name=f"router_{r}")(x_bkd / cfg.mor.temp)[..., 0]
            gate_bk = cfg.mor.alpha * jax.nn.sigmoid(logits_bk)
            decide_bk = causal_logits(cfg, x_bkd, logits_bk, name=f"predictor_{r}")
            if self.routing == "causal":  # every token computed; keys masked to the active ones
                active_bt = active_bt & ((decide_bk > 0) if capacity < 1.0 else True)
                y_btd = run(r, h_btd, positions_bt, mask_btt & active_bt[:, None, :])
                upd_btd = (gate_bk[..., None] * y_btd).astype(h_btd.dtype)
                h_btd = jnp.where(active_bt[..., None], h_btd + upd_btd, h_btd)
                rec_valids.append(active_bt)
                metrics[f"rec{r}/selected"] = masked_mean(active_bt, valid_bt)
                continue
            prev_valid_bk = valid_bt if idx_bk is None else gather(valid_bt, idx_bk)
            g_bk = gate_bk * prev_valid_bk  # padding slots change nothing
            sel_bk = prev_valid_bk
            k = capacity_to_k(capacity, t)
            if k < x_bkd.shape[1]:  # else nothing is filtered (c_0 = 1): no routing needed
                local_bk = route_topk(logits_bk, k, prev_valid_bk)
                sel_bk = selected_mask(local_bk, x_bkd.shape[1]) & prev_valid_bk
                idx_bk = local_bk if idx_bk is None else gather(idx_bk, local_bk)
                x_bkd, g_bk = gather(x_bkd, local_bk), gather(g_bk, local_bk)
            if idx_bk is None:
                y_bkd = run(r, x_bkd, positions_bt, mask_btt, exact=True)
                h_btd = h_btd + (g_bk[..., None] * y_bkd).astype(h_btd.dtype)
                rec_valids.append(valid_bt)
            else:
                pos_bk, mask_bkk = gather(positions_bt, idx_bk), gather_mask(mask_btt, idx_bk)
                y_bkd = run(r, x_bkd, pos_bk, mask_bkk, idx_bk, exact=True)
                h_btd = scatter_add(h_btd, idx_bk, g_bk[..., None] * y_bkd)
                rec_valids.append(selected_mask(idx_bk, t) & valid_bt)
            bce = bce + router_bce(decide_bk, sel_bk, prev_valid_bk)
            zl = zl + z_loss(logits_bk[..., None], prev_valid_bk)
            metrics[f"rec{r}/selected"] = masked_mean(rec_valids[-1], valid_bt)
            metrics[f"rec{r}/causal_acc"] = masked_mean((decide_bk > 0) == sel_bk, prev_valid_bk)
        aux_losses = {}
        if self.routing == "topk":
            name = "mor_predictor_bce" if cfg.router.causal == "predictor" else "mor_router_bce"
            aux_losses = {name: cfg.mor.aux_coef * bce}
            if cfg.mor.z_loss_coef:
                aux_losses["mor_z_loss"] = cfg.mor.z_loss_coef * zl
        return h_btd, rec_valids, {"aux_losses": aux_losses, "metrics": metrics}

    def _token(self, run, h_btd, positions_bt, mask_btt, valid_bt):
        cfg = self.cfg
        n_r = cfg.mor.recursions
        logits_btn = Router(out_dim=n_r, name="router")(h_btd / cfg.mor.temp)
        squash = jax.nn.softmax if cfg.mor.token_gate == "softmax" else jax.nn.sigmoid
        probs_btn = cfg.mor.alpha * squash(logits_btn)
        depth_bt = jnp.argmax(probs_btn, axis=-1)
        gate_bt = jnp.take_along_axis(probs_btn, depth_bt[..., None], axis=-1)[..., 0]
        out_btd, x_btd = h_btd, h_btd
        rec_valids: list[jax.Array] = []
        for r in range(n_r):
            active_bt = valid_bt & (depth_bt >= r)
            y_btd = run(r, x_btd, positions_bt, mask_btt & active_bt[:, None, :])
            done_bt = valid_bt & (depth_bt == r)
            out_btd = out_btd + jnp.where(done_bt[..., None], gate_bt[..., None] * y_btd, 0).astype(
                h_btd.dtype
            )
            x_btd = jnp.where(active_bt[..., None], y_btd, x_btd)
            rec_valids.append(active_bt)
        frac_n = masked_mean_over_tokens(jax.nn.one_hot(depth_bt, n_r), valid_bt)
        metrics = {f"depth{i}/fraction": frac_n[i] for i in range(n_r)}
        aux_losses = {}
        if self.routing == "topk":
            mean_prob_n = masked_mean_over_tokens(probs_btn, valid_bt)
            aux_losses["mor_balance"] = cfg.mor.balance_coef * jnp.sum(
                n_r * jax.lax.stop_gradient(frac_n) * mean_prob_n
            )
            if cfg.mor.z_loss_coef:
                aux_losses["mor_z_loss"] = cfg.mor.z_loss_coef * z_loss(logits_btn, valid_bt)
        return out_btd, rec_valids, {"aux_losses": aux_losses, "metrics": metrics}


def masked_mean_over_tokens(x_bte: jax.Array, valid_bt: jax.Array) -> jax.Array:
    """[B, T, E] -> [E]: the mean over valid tokens."""
    w_bt = valid_bt.astype(jnp.float32)
    return jnp.einsum("bte,bt->e", x_bte.astype(jnp.float32), w_bt) / jnp.maximum(jnp.sum(w_bt), 1.0)
