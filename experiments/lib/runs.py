"""Small byte-level runs of the standard trainer on the built-in corpus: their configs, training
them, their logged curves and restoring their parameters."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax

from rocket.config import DataConfig, ExperimentConfig, ModelConfig, OptimConfig, TrainConfig, override
from rocket.train.loop import train
from rocket.train.restore import restore_run
from rocket.utils import enable_compilation_cache


def experiment(
    workdir: str,
    *,
    steps: int,
    seq_len: int = 128,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    eval_batches: int = 8,
    **model: Any,
) -> ExperimentConfig:
    """A byte-level run on the stdlib corpus: d=64, 2 layers unless `model` changes it (applied by
    `rocket.config.override`: dotted paths such as `**{"mod.capacity": 0.5}` or section dicts)."""
    base = ModelConfig(vocab_size=258, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=seq_len)
    return ExperimentConfig(
        model=override(base, model),
        data=DataConfig(seq_len=seq_len, batch_size=batch_size, eval_batches=eval_batches),
        optim=OptimConfig(lr=lr, warmup_steps=min(30, steps // 10), schedule="cosine"),
        train=TrainConfig(
            steps=steps,
            seed=seed,
            workdir=workdir,
            log_every=max(steps // 4, 1),
            eval_every=steps,
            ckpt_every=steps,
            keep_checkpoints=1,
            sample_tokens=0,
            progress=False,
        ),
    )


def fresh_workdir(path: str) -> str:
    """The absolute `path`, emptied: a rerun trains from scratch instead of resuming."""
    root = os.path.abspath(path)
    shutil.rmtree(root, ignore_errors=True)
    return root


def run(cfg: ExperimentConfig) -> float:
    """Trains (or resumes) `cfg` with the standard trainer -> final validation loss (nats/token)."""
    enable_compilation_cache()
    return float(train(cfg)["eval_loss"])


def logged(cfg: ExperimentConfig, split: str = "train") -> list[dict[str, float]]:
    """The metrics the trainer logged for run `cfg` (logs/metrics.jsonl), one dict per logged step of
    `split` ("train" or "eval"), in step order; a resumed run's repeated steps keep the last record."""
    path = os.path.join(cfg.train.workdir, "logs", "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics log at {path}: has the run {cfg.train.workdir} trained?")
    by_step: dict[int, dict[str, float]] = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("split") == split:
                by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def restore_params(cfg: ExperimentConfig) -> Any:
    """The parameters of the latest checkpoint of the run `cfg` (on the host)."""
    return jax.device_get(restore_run(cfg.train.workdir).params)


def replace_model(cfg: ExperimentConfig, **model: Any) -> ExperimentConfig:
    return dataclasses.replace(cfg, model=override(cfg.model, model))


def replace_train(cfg: ExperimentConfig, **train: Any) -> ExperimentConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
