"""Measurements of one trained routed model (MoD / MoR) of an iso-FLOP family.

- `two_mode_eval`: validation loss with top-k routing (non-causal: whether token i is routed
  depends on later tokens, so it leaks the future) and with causal routing (each token decides by
  the sign of its router / predictor logit: the honest number), on the same batches, plus the
  model's routing statistics (`aux["metrics"]`, e.g. `mod/layer1/causal_acc`) averaged over the
  batches in each mode.
- `forward_seconds`: wall time of the eval forward of several models, timed round-robin (one call
  of each model in turn, repeated) so background load on a shared machine hits all of them alike.
- `training_flops`, `loss_vs_flops`, `describe`: a run's cost (analytic `flops_per_token` of top-k
  routing as trained) and its causal eval loss against cumulative training FLOPs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.lib.per_token import eval_batches
from experiments.lib.runs import logged
from rocket.config import ExperimentConfig, ModelConfig
from rocket.models import Transformer, flops_per_token, param_count
from rocket.train.step import per_token_loss


def training_flops(cfg: ExperimentConfig, step: int) -> float:
    """Model FLOPs spent by `step` training steps of run `cfg`."""
    tokens = step * cfg.data.batch_size * cfg.data.seq_len
    return tokens * flops_per_token(cfg.model, cfg.data.seq_len)


def loss_vs_flops(cfg: ExperimentConfig) -> tuple[list[float], list[float]]:
    """(cumulative training FLOPs, causal eval loss) at every eval the trainer logged for `cfg`."""
    evals = logged(cfg, "eval")
    return [training_flops(cfg, e["step"]) for e in evals], [e["loss"] for e in evals]


def describe(cfg: ExperimentConfig) -> dict[str, float]:
    """Size and cost of a run: parameters (unique, without embeddings too), FLOPs/token, steps."""
    m, t = cfg.model, cfg.data.seq_len
    return {
        "params": param_count(m),
        "params_no_embed": param_count(m, include_embedding=False),
        "fwd_flops_per_token": flops_per_token(m, t, training=False),
        "steps": cfg.train.steps,
        "train_flops": training_flops(cfg, cfg.train.steps),
    }


def two_mode_eval(
    cfg: ExperimentConfig, params: Any, n_batches: int, batch_size: int = 8
) -> dict[str, float]:
    """{"topk": loss, "causal": loss, "topk/<metric>": mean, "causal/<metric>": mean} on the
    validation set (nats/token over real targets; metrics are `aux["metrics"]` averaged over batches)."""
    model = Transformer(cfg.model)
    batches = eval_batches(cfg.data.seq_len, n_batches, batch_size)
    out: dict[str, float] = {}
    for routing in ("topk", "causal"):

        @jax.jit
        def score(params, batch, routing=routing):
            nats_bt, aux = per_token_loss(model, params, batch, routing=routing)
            w_bt = batch["weights"]
            return jnp.sum(nats_bt * w_bt), jnp.sum(w_bt), aux.get("metrics", {})

        nats, tokens, metrics = 0.0, 0.0, []
        for b in batches:
            s, n, m = jax.device_get(score(params, {k: jnp.asarray(v) for k, v in b.items()}))
            nats, tokens = nats + float(s), tokens + float(n)
            metrics.append(m)
        out[routing] = nats / tokens
        for key in metrics[0]:
            out[f"{routing}/{key}"] = float(np.mean([m[key] for m in metrics]))
    return out


def forward_seconds(
    entries: dict[str, tuple[ModelConfig, Any]], seq_len: int, *, batch_size: int = 8, repeats: int = 7
) -> dict[str, dict[str, float]]:
    """name -> {routing: median seconds of one eval forward [batch_size, seq_len]} for both modes,
    timed round-robin over the models (after one compile call each)."""
    batch = {k: jnp.asarray(v) for k, v in eval_batches(seq_len, 1, batch_size)[0].items()}
    calls: dict[tuple[str, str], Callable[[], Any]] = {}
    for name, (model_cfg, params) in entries.items():
        model = Transformer(model_cfg)
        for routing in ("topk", "causal"):
            fwd = jax.jit(
                lambda p, b, model=model, routing=routing: model.apply(
                    {"params": p}, b["inputs"], b["positions"], segment_ids=b["segment_ids"], routing=routing
                )[0]
            )
            calls[name, routing] = lambda fwd=fwd, params=params: jax.block_until_ready(fwd(params, batch))
    times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for call in calls.values():
        call()  # compile
    for _ in range(repeats):
        for key, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    out: dict[str, dict[str, float]] = {name: {} for name in entries}
    for (name, routing), ts in times.items():
        out[name][routing] = float(np.median(ts))
    return out
