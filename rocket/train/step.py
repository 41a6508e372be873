"""The pure training and evaluation steps.

  train_step(state, batch, rng) -> (state, metrics)
  eval_step(params, batch) -> sums (nats, tokens, bytes)

`batch` is the data pipeline's packed dict of [B, T] arrays: inputs, targets, positions,
segment_ids (0 = padding), weights (1.0 on real targets), num_bytes (UTF-8 bytes of each target).
The loss is the weighted mean next-token cross-entropy (nats per target token); bits per byte is
sum(nats) / ln 2 / sum(bytes), exact for any tokenizer. Both functions are pure and jit-able: the
trainer wraps them in `jax.jit` with shardings; a researcher can call them directly.

Models may add regularisers (router losses, z-losses) as `aux["aux_losses"]`: a dict of scalars,
already multiplied by their config coefficients. The objective is
  sum(nats * weights) / sum(weights) + sum(aux_losses),
and each aux loss is logged as `aux/<name>`; scalars in `aux["metrics"]` (router statistics) are
logged as `model/<name>` (token-weighted means over microbatches). Randomness a model needs per call (per-sequence
embeddings, stochastic routing) comes from the flax rng stream `MODEL_RNG_STREAM`, fed from the
step's key; without a key the model must be deterministic (fixed per-call draws).

Loss transforms (`rocket.train.transforms.LossTransforms`: MEAP, sample reweighting, ssToken, aux
scales) plug in through `make_train_step(..., transforms=...)`; without them the step is the plain
one above. The objective then uses the transforms' token weights, while `loss` / `bits_per_byte`
stay the unweighted values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from rocket.train.transforms import LossContext, LossTransforms

Batch = dict[str, jax.Array]

MODEL_RNG_STREAM = "sample"  # flax rng stream name for a model's per-call randomness
_BATCH_KEY_SALT = 0x6D656170  # folded into the step key for batch transforms
_EXTRA_KEY_SALT = 0x65786974  # ... and for extra losses (layer dropout)


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: checkpointed as one pytree."""

    step: jax.Array  # int32 []
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 [2]: raw key data of the run's base key (typed keys don't checkpoint)
    ema_params: Any = None  # EMA "history" params (ssToken); None unless a transform needs them


def init_params(model: nn.Module, rng: jax.Array, seq_len: int) -> Any:
    """Fresh params of `model`, boxed in `nn.Partitioned`: `jax.eval_shape(init_params, ...)`
    exposes their shapes and logical axis names (what `rocket.train.restore` restores into)."""
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    return model.init(rng, tokens, jnp.zeros_like(tokens))["params"]


def init_state(
    model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, seq_len: int, *, ema: bool = False
) -> TrainState:
    """A fresh state. Params (and the optimizer's parameter-shaped moments) stay boxed in
    `nn.Partitioned`, so `jax.eval_shape(init_state, ...)` exposes their logical axis names.
    `ema=True` adds `ema_params`, a copy of the params (the EMA history model starts at init)."""
    init_rng, run_rng = jax.random.split(rng)
    params = init_params(model, init_rng, seq_len)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(run_rng),
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
    )


def per_token_loss(
    model: nn.Module,
    params: Any,
    batch: Batch,
    *,
    routing: str = "topk",
    rng: jax.Array | None = None,
    capture_attention: bool = False,
) -> tuple[jax.Array, dict]:
    """Cross-entropy in nats per target token [B, T] (unweighted) and the model's aux.

    `capture_attention=True` runs the model with the "intermediates" collection mutable, so
    attention layers sow their probabilities (explicit softmax, never a fused kernel); they come
    back as `aux["intermediates"]`."""
    out = model.apply(
        {"params": params},
        batch["inputs"],
        batch["positions"],
        segment_ids=batch["segment_ids"],
        routing=routing,
        rngs=None if rng is None else {MODEL_RNG_STREAM: rng},
        mutable=["intermediates"] if capture_attention else False,
    )
    if capture_attention:
        (logits_btv, aux), variables = out
        aux = {**aux, "intermediates": variables.get("intermediates", {})}
    else:
        logits_btv, aux = out
    nats_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btv, batch["targets"])
    return nats_bt, aux


def token_sums(nats_bt: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """Sums over the real targets: nats, target tokens and the bytes they stand for."""
    w_bt = batch["weights"]
    return {
        "nats": jnp.sum(nats_bt * w_bt),
        "tokens": jnp.sum(w_bt),
        "bytes": jnp.sum(batch["num_bytes"] * (w_bt > 0)),
    }


def split_microbatches(batch: Batch, n: int) -> Batch:
    """[B, ...] -> [n, B/n, ...] taking rows j, j+n, j+2n, ... into microbatch j.

    Strided rather than contiguous: with the batch sharded over devices in contiguous blocks, every
    microbatch then keeps rows on every device (when B / n_devices is divisible by n).
    """

    def split(x):
        return jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    microbatches: int = 1,
    transforms: LossTransforms | None = None,
) -> Callable:
    """Builds `train_step(state, batch, rng) -> (state, metrics)` for this model and optimizer.

    The loss is sum(nats * weights) / sum(weights) over the whole batch. With `microbatches > 1` the
    batch is processed in that many sequential slices (`lax.scan`), accumulating the gradient of the
    summed nats, so activation memory shrinks by that factor while the update stays the same as one
    full-batch step (up to float summation order).

    `transforms` (see `rocket.train.transforms`): batch transforms run once on the whole batch with
    a key folded from `rng`; token weights multiply `weights` in the objective (per microbatch);
    aux losses get their extra scales. With `transforms.ema_decay` the state must carry
    `ema_params` (`init_state(..., ema=True)`), updated after each step as
    ema <- decay * ema + (1 - decay) * params.
    """
    transforms = transforms or LossTransforms()

    def summed_objective(
        params: Any, batch: Batch, rng: jax.Array, step: jax.Array, ema_params: Any
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """sum(nats * w) + tokens * sum(aux_losses): divided by the batch's total tokens later, this
        is the mean loss plus the token-weighted mean of the microbatches' aux losses."""
        nats_bt, aux = per_token_loss(
            model, params, batch, rng=rng, capture_attention=transforms.capture_attention
        )
        sums = token_sums(nats_bt, batch)
        history_bt = None
        if ema_params is not None:
            history_bt = jax.lax.stop_gradient(per_token_loss(model, ema_params, batch, rng=rng)[0])
        w_bt, weight_metrics = transforms.token_weights(nats_bt, LossContext(step, batch, aux, history_bt))
        objective = jnp.sum(nats_bt * w_bt)
        if transforms.weight_fns:
            sums["transform/objective"] = jax.lax.stop_gradient(objective)
        for name, value in weight_metrics.items():
            sums[f"transform/{name}"] = jax.lax.stop_gradient(value) * sums["tokens"]
        aux_losses = transforms.scale_aux(aux.get("aux_losses", {}))
        for name, value in aux_losses.items():
            sums[f"aux/{name}"] = value * sums["tokens"]
        for name, value in aux.get("metrics", {}).items():
            sums[f"model/{name}"] = jax.lax.stop_gradient(value) * sums["tokens"]
        total_aux = sum(aux_losses.values(), jnp.zeros((), jnp.float32))
        for i, (name, scale, fn) in enumerate(transforms.extra_losses):  # e.g. the early-exit loss
            value, extra_metrics = fn(params, batch, step, jax.random.fold_in(rng, _EXTRA_KEY_SALT + i))
            total_aux = total_aux + scale * value
            sums[f"transform/{name}"] = jax.lax.stop_gradient(value) * sums["tokens"]
            for key, metric in extra_metrics.items():
                sums[f"transform/{key}"] = metric * sums["tokens"]
        return objective + total_aux * sums["tokens"], sums

    grad_fn = jax.grad(summed_objective, has_aux=True)  # -> (d objective / d params, sums)

    def summed_grads(
        params: Any, batch: Batch, rng: jax.Array, step: jax.Array, ema_params: Any
    ) -> tuple[Any, dict[str, jax.Array]]:
        if microbatches == 1:
            return grad_fn(params, batch, rng, step, ema_params)
        micro = split_microbatches(batch, microbatches)
        rngs = jax.random.split(rng, microbatches)

        def body(acc, mb_rng):
            return jax.tree.map(jnp.add, acc, grad_fn(params, *mb_rng, step, ema_params)), None

        zeros = jax.tree.map(
            lambda x: jnp.zeros(x.shape, x.dtype),
            jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rngs[0], step, ema_params),
        )
        return jax.lax.scan(body, zeros, (micro, rngs))[0]

    def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, dict]:
        if (state.ema_params is None) != (transforms.ema_decay is None):
            raise ValueError(
                "TrainState.ema_params must be present exactly when the transforms keep an EMA "
                "history model (init_state(..., ema=True))"
            )
        if transforms.batch_fns:  # a key of its own: the model's draws stay those of the plain step
            batch = transforms.transform_batch(jax.random.fold_in(rng, _BATCH_KEY_SALT), batch, state.step)
        grad_sums, sums = summed_grads(state.params, batch, rng, state.step, state.ema_params)
        n_tokens = jnp.maximum(sums["tokens"], 1.0)
        grads = jax.tree.map(lambda g: g / n_tokens, grad_sums)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": sums["nats"] / n_tokens,
            "bits_per_byte": sums["nats"] / jnp.log(2.0) / jnp.maximum(sums["bytes"], 1.0),
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
            "update_norm": optax.tree.norm(updates),
            "tokens": sums["tokens"],
            **{
                name: value / n_tokens
                for name, value in sums.items()
                if name.startswith(("aux/", "model/", "transform/"))
            },
        }
        ema_params = state.ema_params
        if ema_params is not None:
            ema_params = optax.incremental_update(params, ema_params, 1.0 - transforms.ema_decay)
        return (
            state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params),
            metrics,
        )

    return train_step


def make_eval_step(model: nn.Module) -> Callable:
    """Builds `eval_step(params, batch) -> {nats, tokens, bytes}` (sums; causal routing)."""

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        return token_sums(per_token_loss(model, params, batch, routing="causal")[0], batch)

    return eval_step
