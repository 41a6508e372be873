"""The pure training and evaluation steps.

  train_step(state, batch, rng) -> (state, metrics)
  eval_step(params, batch) -> sums (nats, tokens, bytes)

`batch` is the data pipeline's packed dict of [B, T] arrays: inputs, targets, positions,
segment_ids (0 = padding), weights (1.0 on real targets), num_bytes (UTF-8 bytes of each target).
The loss is the weighted mean next-token cross-entropy (nats per target token); bits per byte is
sum(nats) / ln 2 / sum(bytes), exact for any tokenizer. Both functions are pure and jit-able: the
trainer wraps them in `jax.jit` with shardings; a researcher can call them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: checkpointed as one pytree."""

    step: jax.Array  # int32 []
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 [2]: raw key data of the run's base key (typed keys don't checkpoint)


def init_state(
    model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, seq_len: int
) -> TrainState:
    """A fresh state. Params (and the optimizer's parameter-shaped moments) stay boxed in
    `nn.Partitioned`, so `jax.eval_shape(init_state, ...)` exposes their logical axis names."""
    init_rng, run_rng = jax.random.split(rng)
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    params = model.init(init_rng, tokens, jnp.zeros_like(tokens))["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(run_rng),
    )


def per_token_loss(
    model: nn.Module, params: Any, batch: Batch, *, routing: str = "topk"
) -> tuple[jax.Array, dict]:
    """Cross-entropy in nats per target token [B, T] (unweighted) and the model's aux."""
    logits_btv, aux = model.apply(
        {"params": params},
        batch["inputs"],
        batch["positions"],
        segment_ids=batch["segment_ids"],
        routing=routing,
    )
    nats_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btv, batch["targets"])
    return nats_bt, aux


def make_train_step(model: nn.Module, tx: optax.GradientTransformation) -> Callable:
    """Builds `train_step(state, batch, rng) -> (state, metrics)` for this model and optimizer."""

    def loss_fn(params, batch):
        nats_bt, _ = per_token_loss(model, params, batch)
        w_bt = batch["weights"]
        n_tokens = jnp.maximum(jnp.sum(w_bt), 1.0)
        loss = jnp.sum(nats_bt * w_bt) / n_tokens
        return loss, {
            "nats": jnp.sum(nats_bt * w_bt),
            "tokens": jnp.sum(w_bt),
            "bytes": jnp.sum(batch["num_bytes"] * (w_bt > 0)),
        }

    def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, dict]:
        del rng  # the dense baseline is deterministic; stochastic transforms draw from it
        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "bits_per_byte": sums["nats"] / jnp.log(2.0) / jnp.maximum(sums["bytes"], 1.0),
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
            "update_norm": optax.tree.norm(updates),
            "tokens": sums["tokens"],
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_eval_step(model: nn.Module) -> Callable:
    """Builds `eval_step(params, batch) -> {nats, tokens, bytes}` (sums; causal routing)."""

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        nats_bt, _ = per_token_loss(model, params, batch, routing="causal")
        w_bt = batch["weights"]
        return {
            "nats": jnp.sum(nats_bt * w_bt),
            "tokens": jnp.sum(w_bt),
            "bytes": jnp.sum(batch["num_bytes"] * (w_bt > 0)),
        }

    return eval_step
