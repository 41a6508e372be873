"""Compile time at depth (`experiments.bench_routing`): dense, MoD and MoR models of the same width
and depth, scanned over layers (`model.scan_layers`, `rocket.models.scan`) and unscanned.

  compile_times(d=128, layers=24, seq=256, batch=1, reps=2) -> rows, and prints the table

One measurement is the time of `jax.jit(grad(loss)).lower(...).compile()`: tracing, lowering and
XLA compilation of the forward and backward pass of the training loss (cross-entropy plus the
router losses, top-k routing), on abstract parameters (nothing is initialised or run). Every
measurement compiles a fresh function with the persistent compilation cache off; the models take
turns round by round and keep their best, so background load and one-time warm-up hit all of them
alike. Wall time is what a launch waits; CPU time (all threads) is steadier on a loaded machine.
The ratios to the scanned dense model are the numbers to read.

Kernels: the number of distinct kernels XLA's CPU backend compiles (one LLVM module each, counted
from one more, untimed compile that dumps them; "-" on other backends). XLA reuses a kernel for
fusions with the same computation and shapes, and each compiled kernel costs about the same, so
compile time follows this count, which unlike the time is exact under any load: a scan body adds
its kernels once, and so does every shape at which a block runs (MoD's k routed tokens, each MoR
recursion's survivors) and every residual shape the scan stacks for the backward pass.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax.core import meta

from experiments.lib.bench_routing import configs
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


def compile_fn(cfg: ModelConfig, seq: int, batch: int) -> Callable[..., Any]:
    """A callable that compiles the loss gradient of `cfg` afresh (a new function every call; its
    keyword arguments are XLA compiler options) and returns the compiled executable."""
    model = Transformer(cfg)
    params = meta.unbox(jax.eval_shape(lambda: init_params(model, jax.random.key(0), seq)))
    tokens = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    batch_sds = dict.fromkeys(("inputs", "targets", "positions", "segment_ids"), tokens)

    def loss(p, b):
        nats_bt, aux = per_token_loss(model, p, b)
        return jnp.mean(nats_bt) + sum(aux.get("aux_losses", {}).values())

    return lambda **options: jax.jit(jax.grad(loss)).lower(params, batch_sds).compile(options or None)


def kernel_count(fn: Callable[..., Any]) -> int | None:
    """Distinct kernels the CPU backend compiles for `fn` (a `compile_fn`): the object files of one
    compile dumped with `xla_dump_to`; None where the backend writes none (GPU, TPU)."""
    with tempfile.TemporaryDirectory() as dump:
        fn(xla_dump_to=dump)
        return len(list(pathlib.Path(dump).glob("*.o"))) or None


def compile_times(d: int, layers: int, seq: int, batch: int, reps: int) -> list[dict]:
    """Best-of-`reps` compile seconds (wall, and CPU: the process's time on all cores, steadier under
    background load) of every model in `MODELS`, the models taking turns, and their ratios to the
    scanned dense model, and each model's `kernel_count`. Prints the table; returns its rows."""
    fns = {label: compile_fn(cfg, seq, batch) for label, cfg in compile_configs(d, layers, seq).items()}
    wall, cpu = dict.fromkeys(fns, float("inf")), dict.fromkeys(fns, float("inf"))
    cache_was_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        for _ in range(reps):
            for label, fn in fns.items():
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall[label] = min(wall[label], time.perf_counter() - w0)
                cpu[label] = min(cpu[label], time.process_time() - c0)
        kernels = {label: kernel_count(fn) for label, fn in fns.items()}
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_was_on)
    ref = MODELS[0]
    print(f"compile time, fwd+bwd of the loss (d={d}, {layers} layers, seq {seq}, best of {reps}):")
    print(
        f"{'model':>11} {'wall s':>7} {'x dense scan':>13} {'cpu s':>7} {'x dense scan':>13}"
        f" {'kernels':>8} {'x dense scan':>13}"
    )
    rows = []
    for label in MODELS:
        wx, cx = wall[label] / wall[ref], cpu[label] / cpu[ref]
        n, n_ref = kernels[label], kernels[ref]
        kx = n / n_ref if n and n_ref else None
        print(
            f"{label:>11} {wall[label]:>7.2f} {wx:>13.2f} {cpu[label]:>7.2f} {cx:>13.2f}"
            f" {n or '-':>8} {'-' if kx is None else f'{kx:.2f}':>13}",
            flush=True,
        )
        row = {"model": label, "wall_s": wall[label], "cpu_s": cpu[label], "wall_x": wx, "cpu_x": cx}
        rows.append(row | {"kernels": n, "kernels_x": kx})
    return rows
