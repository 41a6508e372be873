"""Restore a trained run for inference or analysis: `restore_run(workdir)` -> `RestoredRun`.

    run = restore_run("runs/my_run")            # the latest checkpoint; step=k for an earlier one
    step_fn = ModelStep(run.model, {"params": run.params})
    tokenizer = run.tokenizer()

Only what a forward pass needs is built and read: the config saved with the checkpoint, the model
module and its parameters. The optimizer is never constructed and nothing is jitted: the params'
shapes come from `jax.eval_shape` of the model's init (`rocket.train.step.init_params`), and only
the ``params`` field of the saved `TrainState` is read from disk (`Checkpointer.restore_fields`, an
orbax partial restore: the optimizer state stays on disk). Resuming training is
`rocket.train.loop.train`'s job (it restores the whole state).

Placement: the params are sharded exactly as the trainer shards them, with rocket's logical axis
rules (`rocket.parallel.DEFAULT_RULES`) on `mesh`, by default the mesh the saved `parallel` config
gives on this machine's devices (as `Trainer.build` does). On other hardware (a run trained with
fsdp=8, restored on one CPU) pass a mesh that fits, e.g. `parallel.make_mesh(ParallelConfig())`:
every device on the data axis, params replicated.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax

from rocket import parallel
from rocket.config import ExperimentConfig, saved_config
from rocket.data import Tokenizer, get_tokenizer, prepare_corpus
from rocket.data.build import corpus_options
from rocket.interop.training import tokenizer_name
from rocket.models import Transformer
from rocket.train.checkpoint import Checkpointer, CheckpointError, run_checkpoint_dir
from rocket.train.step import init_params


@dataclasses.dataclass(frozen=True, eq=False)
class RestoredRun:
    """A trained run's checkpoint, ready to apply: `model.apply({"params": params}, ...)`.

    Attributes:
      config: the `ExperimentConfig` the run was trained with (saved with the checkpoint).
      step: the checkpoint's step.
      params: the parameter pytree (unboxed arrays, sharded as in training).
      model: the `Transformer` module of `config.model`.
    """

    config: ExperimentConfig
    step: int
    params: Any
    model: Transformer

    def tokenizer(self) -> Tokenizer:
        """The run's tokenizer. Built on each call (keep the result): a sentencepiece tokenizer
        needs the prepared corpus (both are cached on disk after the first time)."""
        dc, name = self.config.data, tokenizer_name(self.config)
        cache_dir = dc.cache_dir or None
        corpus = None if name != "sentencepiece" else prepare_corpus(dc.corpus, **corpus_options(dc))
        return get_tokenizer(name, corpus=corpus, vocab_size=dc.spm_vocab_size, cache_dir=cache_dir)


def abstract_params(cfg: ExperimentConfig, mesh: jax.sharding.Mesh) -> Any:
    """ShapeDtypeStructs of the run's (unboxed) params, with the trainer's shardings on `mesh`."""
    model = Transformer(cfg.model)
    with nn.logical_axis_rules(parallel.DEFAULT_RULES):
        boxed = jax.eval_shape(lambda rng: init_params(model, rng, cfg.data.seq_len), jax.random.key(0))
        shardings = parallel.logical_to_shardings(boxed, mesh)
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), nn.meta.unbox(boxed), shardings
    )


def restore_run(
    workdir: str, step: int | None = None, *, mesh: jax.sharding.Mesh | None = None
) -> RestoredRun:
    """The params, config and model of checkpoint `step` (None: the latest) of a training run.

    `workdir` is the run's work directory or its checkpoint directory. `mesh`, a (data, fsdp,
    tensor) mesh as `rocket.parallel.make_mesh` builds, places the params (default: the saved
    `parallel` config's mesh on this machine's devices; see the module docstring). Raises a one-line
    `CheckpointError` naming the path when there is no checkpoint, no such step or no saved config.
    """
    ckpt_dir = run_checkpoint_dir(workdir) if os.path.isdir(run_checkpoint_dir(workdir)) else workdir
    with Checkpointer(ckpt_dir, read_only=True, async_save=False) as ckpt:
        step = ckpt.check_step(step)
        saved = (ckpt.read_meta(step) or {}).get("config")
        if saved is None:
            raise CheckpointError(f"Checkpoint step {step} at {ckpt.step_path(step)!r} has no saved config.")
        cfg = saved_config(saved)
        mesh = parallel.make_mesh(cfg.parallel) if mesh is None else mesh
        params = ckpt.restore_fields(step, {"params": abstract_params(cfg, mesh)})["params"]
    return RestoredRun(config=cfg, step=step, params=params, model=Transformer(cfg.model))
