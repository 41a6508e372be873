"""Compile time at depth (`experiments.bench_routing`): dense, MoD and MoR models of the same width
and depth, scanned over layers (`model.scan_layers`, `rocket.models.scan`) and unscanned.

  compile_times(d=128, layers=24, seq=256, batch=1, reps=2) -> rows, and prints the table

One measurement is the wall time of `jax.jit(grad(loss)).lower(...).compile()`: tracing, lowering
and XLA compilation of the forward and backward pass of the training loss (cross-entropy plus the
router losses, top-k routing), on abstract parameters (nothing is initialised or run). Every
measurement builds a fresh function, the persistent compilation cache is off, and the models take
turns round by round keeping their best (`interleaved`), so background load and one-time warm-up
hit all of them alike. The ratio to the scanned dense model is the number to read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax.core import meta

from experiments.lib.bench_routing import configs
from experiments.lib.bench_timing import interleaved
from rocket.config import ModelConfig
from rocket.models import Transformer
from rocket.train.step import init_params, per_token_loss

MODELS = ("dense scan", "mod", "mod scan", "mor", "mor scan")  # the first is the reference


def compile_configs(d: int, layers: int, seq: int) -> dict[str, ModelConfig]:
    """`bench_routing.configs` (dense, MoD every other layer, MoR middle-cycle N_r = 2), scanned
    ("<name> scan") and not."""
    base = configs(d, layers, seq, "float32")
    out = {}
    for label in MODELS:
        name, _, scan = label.partition(" ")
        out[label] = dataclasses.replace(base[name], scan_layers=bool(scan))
    return out


def compile_fn(cfg: ModelConfig, seq: int, batch: int) -> Callable[[], None]:
    """A callable that compiles the loss gradient of `cfg` afresh (a new function every call)."""
    model = Transformer(cfg)
    params = meta.unbox(jax.eval_shape(lambda: init_params(model, jax.random.key(0), seq)))
    tokens = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    names = ("inputs", "targets", "positions", "segment_ids")
    batch_sds = dict.fromkeys(names, tokens)

    def loss(p, b):
        nats_bt, aux = per_token_loss(model, p, b)
        return jnp.mean(nats_bt) + sum(aux.get("aux_losses", {}).values())

    return lambda: jax.jit(jax.grad(loss)).lower(params, batch_sds).compile() and None


def compile_times(d: int, layers: int, seq: int, batch: int, reps: int) -> list[dict]:
    """Best-of-`reps` compile seconds of every model in `MODELS` and the ratio to the scanned
    dense model. Prints the table; returns its rows."""
    cfgs = compile_configs(d, layers, seq)
    fns = {label: compile_fn(cfg, seq, batch) for label, cfg in cfgs.items()}
    cache_was_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:  # `interleaved` times each call; the call itself compiles
        best = interleaved(fns, reps, warmup=0)
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_was_on)
    print(f"compile time, fwd+bwd of the loss (d={d}, {layers} layers, seq {seq}, best of {reps}):")
    print(f"{'model':>11} {'compile s':>10} {'x dense scan':>13}")
    rows = []
    for label in MODELS:
        ratio = best[label] / best[MODELS[0]]
        print(f"{label:>11} {best[label]:>10.2f} {ratio:>13.2f}", flush=True)
        rows.append({"model": label, "compile_s": best[label], "x_dense_scan": ratio})
    return rows
