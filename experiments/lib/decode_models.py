"""Small models trained on the built-in corpus for the decoding benchmarks (cached under runs/).

`trained_model(tokenizer, steps)` trains (or loads) a 4-layer d=128 decoder with context 128 on the
standard-library corpus with the real `Trainer` step, and returns (model, variables, tokenizer, data).
"""

from __future__ import annotations

import os
import time

import flax.serialization
import jax

from rocket.config import DataConfig, ExperimentConfig, ModelConfig, OptimConfig, TrainConfig
from rocket.data import build_data
from rocket.models import Transformer
from rocket.train.loop import Trainer

CTX = 128


def experiment_config(tokenizer: str, steps: int, vocab: int) -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(
            vocab_size=vocab, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=CTX
        ),
        data=DataConfig(
            corpus="stdlib", tokenizer=tokenizer, seq_len=CTX, batch_size=16, spm_vocab_size=4096
        ),
        optim=OptimConfig(lr=3e-3, warmup_steps=30, schedule="cosine"),
        train=TrainConfig(steps=steps, workdir="runs/decode_transforms", log_every=50),
    )


def trained_model(tokenizer: str, steps: int, workdir: str = "runs/decode_transforms"):
    """-> (Transformer, {"params": ...}, tokenizer, data). Trains once per (tokenizer, steps)."""
    probe = build_data("stdlib", tokenizer, seq_len=CTX, batch_size=16, spm_vocab_size=4096, eval_batches=4)
    cfg = experiment_config(tokenizer, steps, probe.tokenizer.vocab_size)
    trainer = Trainer.build(cfg)
    state = trainer.init(0)
    path = os.path.join(workdir, f"{tokenizer}-{steps}.msgpack")
    if os.path.exists(path):
        with open(path, "rb") as f:
            params = flax.serialization.from_bytes(state.params, f.read())
    else:
        t0 = time.perf_counter()
        for step in range(steps):
            state, metrics = trainer.step(state, next(probe.train))
            if (step + 1) % 100 == 0:
                print(
                    f"  [{tokenizer}] step {step + 1}/{steps} loss {float(metrics['loss']):.3f}", flush=True
                )
        params = jax.device_get(state.params)
        os.makedirs(workdir, exist_ok=True)
        with open(path, "wb") as f:
            f.write(flax.serialization.to_bytes(params))
        print(
            f"  [{tokenizer}] trained {steps} steps in {time.perf_counter() - t0:.0f}s -> {path}", flush=True
        )
    ev = trainer.evaluate(params, probe.eval_batches)
    print(f"  [{tokenizer}] eval loss {ev['loss']:.3f}, bits/byte {ev['bits_per_byte']:.3f}", flush=True)
    return Transformer(cfg.model), {"params": params}, probe.tokenizer, probe
