"""LayerSkip's early-exit loss with layer dropout (Elhoushi et al. 2024, arXiv 2404.16710, section 4),
so that a model's shallow exits draft well for self-speculative decoding (`rocket.decode.methods.self_spec`).

For a dense model of L layers, at training step t, with h_l the residual stream after layer l
(0-based) and CE_l the cross-entropy of the shared exit RMSNorm(h_l) W_out:

  layer dropout (eq. 1-3)   h_{l+1} = h_l + M_{l,t} (f_l(h_l) - h_l),  M ~ Bernoulli(1 - p_{l,t}) per row,
                            p_{l,t} = S(t) D(l) p_max,  D(l) = e^{l ln 2 / (L - 1)} - 1,  S(t) = 1
  curriculum (sec. 4.2)     rotational C_rot,R(t, l) = 1 iff (l - t) mod R = 0, or l = L - 1
                            ("none": every layer, every step)
  scales (eq. 5-6)          e(l) = e_scale sum_{i=0}^{l} i             for l < L - 1
                            e(L - 1) = L - 1 + e_scale sum_{i=0}^{L-2} i
                            ~e(t, l) = C(t, l) e(l) / sum_i C(t, i) e(i)
  early-exit loss           L_EE = sum_l ~e(t, l) CE_l

The train step adds `loss.early_exit_scale * L_EE` to the plain objective (a second, dropout-
regularised forward on the same batch; the plain forward keeps the model's own loss), so the final
layer keeps its undropped loss and every exit learns to predict through the shared head. The exits
are the layers' own outputs: rocket's self-drafts read them through `SelfExit` without an adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rocket.config import ConfigError, ModelConfig
from rocket.config.loss import EARLY_EXIT_CURRICULA
from rocket.layers import make_block_mask
from rocket.models.exits import embed_tokens, model_stages, readout, run_stage

Batch = dict[str, jax.Array]


def exit_scales(n_layers: int, e_scale: float) -> jax.Array:
    """e(l) [L] of LayerSkip eq. 5 (before the curriculum and the normalisation)."""
    tri = [e_scale * l * (l + 1) / 2 for l in range(n_layers)]
    tri[-1] = (n_layers - 1) + e_scale * (n_layers - 2) * (n_layers - 1) / 2
    return jnp.asarray(tri, jnp.float32)


def curriculum(step: jax.Array, n_layers: int, kind: str, rotation: int) -> jax.Array:
    """C(t, l) bool [L]: the exits whose loss counts at step t (the last layer always does)."""
    layers = jnp.arange(n_layers)
    if kind == "none":
        return jnp.ones((n_layers,), bool)
    if kind != "rotational":
        raise ValueError(f"unknown early-exit curriculum {kind!r}; known: {EARLY_EXIT_CURRICULA}")
    return ((layers - step) % rotation == 0) | (layers == n_layers - 1)


def exit_weights(step: jax.Array, n_layers: int, e_scale: float, kind: str, rotation: int) -> jax.Array:
    """~e(t, l) [L]: the normalised per-exit loss weights (eq. 6); they sum to 1."""
    e_l = exit_scales(n_layers, e_scale) * curriculum(step, n_layers, kind, rotation)
    return e_l / jnp.sum(e_l)


def dropout_rates(n_layers: int, p_max: float) -> jax.Array:
    """p_l [L] = D(l) p_max with D(l) = e^{l ln 2 / (L - 1)} - 1 (0 at the first layer, p_max at the last)."""
    if n_layers == 1:
        return jnp.zeros((1,), jnp.float32)
    layers = jnp.arange(n_layers, dtype=jnp.float32)
    return (jnp.exp(layers * math.log(2.0) / (n_layers - 1)) - 1.0) * p_max


ExtraLossFn = Callable[[Any, Batch, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def early_exit_loss_fn(
    mcfg: ModelConfig, *, e_scale: float, kind: str, rotation: int, p_max: float
) -> ExtraLossFn:
    """(params, batch, step, key) -> (L_EE, metrics) for a dense model (module docstring)."""
    stages = model_stages(mcfg)
    if any(s.kind != "block" for s in stages) or mcfg.mor.enabled:
        raise ConfigError(
            "loss.early_exit_scale",
            "the early-exit loss needs a dense model (MoD / MoR use their own routing)",
        )
    n = len(stages)
    rates = dropout_rates(n, p_max)

    def fn(
        params: Any, batch: Batch, step: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        tokens, seg = batch["inputs"], batch["segment_ids"]
        b, t = tokens.shape
        mask = make_block_mask(seg, None, t, b)
        active = jnp.ones((b, t), bool)
        weights = exit_weights(step, n, e_scale, kind, rotation)
        w_bt = batch["weights"].astype(jnp.float32)
        h = embed_tokens(mcfg, params, tokens)
        total, metrics = jnp.zeros((), jnp.float32), {}
        for layer, stage in enumerate(stages):
            out, *_ = run_stage(mcfg, params, stage, h, active, batch["positions"], mask, [None])
            keep_b = jax.random.uniform(jax.random.fold_in(key, layer), (b,)) >= rates[layer]
            h = jnp.where(keep_b[:, None, None], out, h)
            nats_bt = optax.softmax_cross_entropy_with_integer_labels(
                readout(mcfg, params, h)[0], batch["targets"]
            )
            ce = jnp.sum(nats_bt * w_bt) / jnp.maximum(jnp.sum(w_bt), 1.0)
            total = total + weights[layer] * ce
            metrics[f"early_exit/ce_layer{layer}"] = jax.lax.stop_gradient(ce)
        return total, metrics

    return fn
