"""Models for the decoding benchmarks: small ones trained on the built-in corpus (cached under runs/),
or real Hugging Face checkpoints.

`trained_model(tokenizer, steps)` trains (or loads) a 4-layer d=128 decoder with context 128 on the
standard-library corpus with the real `Trainer` step, and returns (model, variables, tokenizer, data).
`hf_models(target, draft, slots)` loads a Hugging Face target and draft (`--hf` / `--hf_draft`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import flax.serialization
import jax

from rocket.config import DataConfig, ExperimentConfig, ModelConfig, OptimConfig, TrainConfig
from rocket.data import build_data
from rocket.decode import ModelStep
from rocket.interop.decoding import load_hf_steps
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


def hf_models(target: str, draft: str | None, slots: tuple[str, ...]) -> tuple[dict[str, ModelStep], Any]:
    """({"target": step, slot: draft step for every slot}, tokenizer) of Hugging Face checkpoints
    (directories or hub ids); no slots without a draft. The draft's vocabulary must be the target's."""
    target_step, draft_step, tokenizer = load_hf_steps(target, draft)
    models = {"target": target_step}
    if draft_step is not None:
        models |= dict.fromkeys(slots, draft_step)
    return models, tokenizer


def add_hf_flags(parser: Any) -> None:
    """`--hf TARGET --hf_draft DRAFT`: decode Hugging Face checkpoints instead of the trained models."""
    parser.add_argument("--hf", help="a Hugging Face target (directory or hub id) instead of trained models")
    parser.add_argument("--hf_draft", help="its draft, with the same vocabulary (e.g. SmolLM2-135M)")
