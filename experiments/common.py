"""Shared pieces of rocket's experiments (the repro_*.py scripts): small byte-level runs of the
standard trainer on the built-in corpus, their logged curves, restoring their parameters, and
per-position evaluation."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rocket.config import DataConfig, ExperimentConfig, ModelConfig, OptimConfig, TrainConfig
from rocket.data import build_data
from rocket.models import Transformer
from rocket.train.checkpoint import Checkpointer
from rocket.train.loop import Trainer, train
from rocket.train.step import MODEL_RNG_STREAM
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
    """A byte-level run on the stdlib corpus: d=64, 2 layers unless `model` overrides."""
    model = {"vocab_size": 258, "d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, **model}
    model.setdefault("max_seq_len", seq_len)
    return ExperimentConfig(
        model=ModelConfig(**model),
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
    """The parameters of the latest checkpoint of the run `cfg`."""
    ckpt = Checkpointer(os.path.join(cfg.train.workdir, "checkpoints"), read_only=True)
    state, _, _ = ckpt.restore(None, Trainer.build(cfg).abstract_state())
    ckpt.close()
    return jax.device_get(state.params)


def eval_batches(seq_len: int, n_batches: int, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Validation batches of the built-in corpus at length `seq_len`."""
    return build_data(seq_len=seq_len, batch_size=batch_size, eval_batches=n_batches).eval_batches


def per_token(
    model_cfg: ModelConfig,
    params: Any,
    batches: list[dict[str, np.ndarray]],
    *,
    key: jax.Array | None = None,
    cipher: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Flat arrays over the real targets of `batches`: nats, top-1 correctness and position.

    `key` feeds the model's "sample" stream (lexinvariant draws); `cipher` [V] relabels inputs and
    targets (a substitution cipher) before scoring.
    """
    model = Transformer(model_cfg)

    @jax.jit
    def score(params, batch, key):
        rngs = None if key is None else {MODEL_RNG_STREAM: key}
        logits, _ = model.apply(
            {"params": params},
            batch["inputs"],
            batch["positions"],
            segment_ids=batch["segment_ids"],
            rngs=rngs,
        )
        nats = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        return nats, jnp.argmax(logits, -1) == batch["targets"]

    out: dict[str, list[np.ndarray]] = {"nats": [], "correct": [], "position": []}
    for i, b in enumerate(batches):
        b = dict(b)
        if cipher is not None:
            b["inputs"], b["targets"] = cipher[b["inputs"]], cipher[b["targets"]]
        nats, correct = score(
            params,
            {k: jnp.asarray(v) for k, v in b.items()},
            None if key is None else jax.random.fold_in(key, i),
        )
        real = b["weights"] > 0
        out["nats"].append(np.asarray(nats)[real])
        out["correct"].append(np.asarray(correct)[real])
        out["position"].append(b["positions"][real])
    return {k: np.concatenate(v) for k, v in out.items()}


def by_bucket(values: np.ndarray, positions: np.ndarray, edges: list[int]) -> list[float]:
    """Mean of `values` over positions in [edges[i], edges[i+1])."""
    return [
        float(values[(positions >= lo) & (positions < hi)].mean())
        if np.any((positions >= lo) & (positions < hi))
        else float("nan")
        for lo, hi in zip(edges[:-1], edges[1:])
    ]


def replace_model(cfg: ExperimentConfig, **model: Any) -> ExperimentConfig:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model))


def replace_train(cfg: ExperimentConfig, **train: Any) -> ExperimentConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def spread(values: list[float], digits: int = 3) -> str:
    """ "mean ± sd (n=k)" of repeated measurements (seeds or draws); just the value when there is one."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f} (n={len(values)})"
