"""Rocket's train step against a peer's (google-deepmind/nanodo) at equal shapes and matmul FLOPs.

nanodo is a source checkout given by path (not vendored, not a dependency of rocket). Its own
`train.Trainer` (jitted, donated `_train_step`: value_and_grad of its LM loss, AdamW through
`optax.MultiSteps`, its per-step metrics) runs its `TransformerDo` (learned positions, LayerNorm,
MHA, GeLU MLP of width F, tied embeddings, float32 logits); rocket's `Trainer.step` runs the dense
baseline (RoPE, RMSNorm, MHA, SwiGLU of width d_ff, tied embeddings, float32 logits, its metrics).
A GeLU MLP of width F costs 2 D F multiply-adds per token, SwiGLU 3 D d_ff: F = 1.5 d_ff gives
equal matmul FLOPs (nanodo F=1536 against rocket d_ff=1024 at D=256).
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import sys
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rocket.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from rocket.data import random_batch
from rocket.train.loop import Trainer


@dataclasses.dataclass(frozen=True)
class Shape:
    """One side-by-side configuration: model width/depth/heads, sequence, batch, vocabulary."""

    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    seq_len: int = 256
    batch: int = 8
    vocab: int = 258
    d_ff: int = 1024  # rocket's SwiGLU width; nanodo's GeLU width is 1.5x (equal matmul FLOPs)


def import_nanodo(path: str) -> types.ModuleType:
    """nanodo's `train` module from a source checkout at `path` (the folder holding `nanodo/`).

    nanodo.train imports `clu` for its logging loop only (metric writers, periodic actions: not the
    step); where clu (or the TensorFlow it pulls in) is missing, empty stand-ins take its place."""
    root = pathlib.Path(path).expanduser().resolve()
    if not (root / "nanodo" / "train.py").is_file():
        raise FileNotFoundError(f"no nanodo checkout at {path} (expected {root}/nanodo/train.py)")
    sys.path.insert(0, str(root))
    for name in ("clu.metric_writers", "clu.periodic_actions"):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules.setdefault("clu", types.ModuleType("clu"))
            sys.modules[name] = types.ModuleType(name)
            setattr(sys.modules["clu"], name.split(".")[1], sys.modules[name])
    return importlib.import_module("nanodo.train")


def nanodo_step(train: types.ModuleType, shape: Shape) -> Callable[[], Any]:
    """A closure running one step of nanodo's own Trainer (state kept inside) -> its metrics."""
    from nanodo.configs import default

    c = default.get_config()
    c.batch_size = shape.batch
    c.log_internal_metrics = False  # per-tensor statistics: rocket logs global norms only
    c.model.update(
        D=shape.d_model,
        H=shape.n_heads,
        L=shape.seq_len,
        N=shape.n_layers,
        F=shape.d_ff * 3 // 2,
        dtype="float32",
    )
    c.opt.update(num_train_steps=10_000, warmup_steps=10)
    model, get_loss_fn = train.model_factory.get_model_and_loss(c, shape.vocab)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    shardings, state = train._init_train_state(c, model, jax.random.key(0), mesh)
    trainer = train.Trainer(c, state, mesh, shardings, get_loss_fn)
    tokens = random_batch(shape.batch, shape.seq_len, shape.vocab)["inputs"]
    steps = iter(range(1 << 30))
    return lambda: trainer.do_step(next(steps), jnp.asarray(tokens))  # the step donates its input


def rocket_config(shape: Shape) -> ExperimentConfig:
    """Rocket's dense baseline at `shape` (MHA: n_kv_heads = n_heads)."""
    model = ModelConfig(
        vocab_size=shape.vocab,
        d_model=shape.d_model,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        n_kv_heads=shape.n_heads,
        d_ff=shape.d_ff,
        max_seq_len=shape.seq_len,
    )
    return ExperimentConfig(
        model=model,
        data=DataConfig(seq_len=shape.seq_len, batch_size=shape.batch),
        train=TrainConfig(steps=10_000),
    )


def rocket_step(shape: Shape) -> Callable[[], Any]:
    """A closure running one `Trainer.step` (jitted, donated, metrics included) -> its metrics."""
    trainer = Trainer.build(rocket_config(shape))
    box = {"state": trainer.init(0)}
    batch = random_batch(shape.batch, shape.seq_len, shape.vocab)

    def step():
        box["state"], metrics = trainer.step(box["state"], batch)
        return metrics

    return step
