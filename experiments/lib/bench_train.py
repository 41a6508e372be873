"""One dense training-step measurement (`experiments.bench_train`, `experiments.bench_device`): the
real sharded, jitted, donated `Trainer.step` on a synthetic batch -> compile time, median step time,
tokens/s, achieved TFLOP/s and MFU (from `flops_per_token` and the device's peak; None where the peak
is unknown, e.g. CPUs, unless ROCKET_PEAK_FLOPS is set)."""

from __future__ import annotations

import statistics
import time

import jax

from rocket.config import DataConfig, ExperimentConfig, ModelConfig, OptimConfig, TrainConfig
from rocket.data import random_batch
from rocket.models import flops_per_token, param_count
from rocket.train.loop import Trainer
from rocket.train.metrics import matmul_dtype, mfu, peak_flops

# name: (d_model, n_layers, n_heads, n_kv_heads, seq_len, batch)
SIZES = {
    "smoke": (32, 1, 2, 1, 16, 2),  # --smoke: seconds, the test suite's check
    "tiny": (128, 2, 4, 2, 128, 8),
    "small": (256, 4, 4, 2, 256, 8),
    "base": (512, 8, 8, 4, 256, 8),
    "gpt2s": (768, 12, 12, 4, 1024, 16),  # accelerator-sized
    "1b": (2048, 16, 16, 8, 2048, 8),
}


def bench(name: str, steps: int, dtype: str, scan: bool, remat: str, vocab: int) -> dict:
    d, layers, heads, kv, seq, batch = SIZES[name]
    cfg = ExperimentConfig(
        model=ModelConfig(
            vocab_size=vocab,
            d_model=d,
            n_layers=layers,
            n_heads=heads,
            n_kv_heads=kv,
            max_seq_len=seq,
            dtype=dtype,
            scan_layers=scan,
            remat=remat,
        ),
        data=DataConfig(seq_len=seq, batch_size=batch),
        optim=OptimConfig(),
        train=TrainConfig(steps=steps + 1),
    )
    trainer = Trainer.build(cfg)
    state = trainer.init(0)
    batch_np = random_batch(batch, seq, vocab)
    t0 = time.perf_counter()
    state, m = trainer.step(state, batch_np)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = trainer.step(state, batch_np)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    tok_s = batch * seq / step_s
    fpt = flops_per_token(cfg.model, seq)
    peak = peak_flops(jax.devices()[0], matmul_dtype(dtype))
    util = mfu(fpt, tok_s, peak, jax.device_count())
    return {
        "size": name,
        "params_M": param_count(cfg.model) / 1e6,
        "mflops_per_token": fpt / 1e6,
        "compile_s": compile_s,
        "step_ms": step_s * 1e3,
        "tokens_per_s": tok_s,
        "tflops": fpt * tok_s / 1e12,
        "mfu": util,
        "loss": float(m["loss"]),
    }
