"""Continue training a grown TokenFormer: growth of a `TrainState` and of a run's checkpoint.

The model-level growth (`rocket.models.tokenformer.grow`: new parameter tokens with zero keys and
the scale constant pinned, so the grown model computes exactly the same function; Wang et al.,
"TokenFormer", 2024, arXiv:2410.23168, section 3.6) is extended here to what the trainer keeps:

  * in memory: `grow_train_state(state, cfg, tx, n)` grows the params (and the EMA params, if any)
    and the optimizer state (old moments kept, the new rows' moments start at the optimizer's
    init, zero for Adam / Lion / SGD momentum; step and RNG kept);
  * on disk: `grow_checkpoint(src_workdir, cfg, dst_workdir, n)` restores the latest checkpoint of
    a run, grows it and saves it (with the data position) into a new work directory at the same
    step; `python -m rocket.train` with the returned config (printed as overrides) and
    `train.workdir=dst_workdir` resumes from it. `train.steps` is the total over both stages and
    the learning-rate schedule is evaluated at the resumed step of the new run's schedule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import optax

from rocket.config import ExperimentConfig, ModelConfig, to_dict
from rocket.models.tokenformer import grow
from rocket.train.checkpoint import Checkpointer, run_checkpoint_dir
from rocket.train.loop import Trainer
from rocket.train.optim import make_optimizer
from rocket.train.step import TrainState


def grow_opt_state(opt_state: Any, new_params: Any, tx: optax.GradientTransformation) -> Any:
    """The optimizer state for the grown params: every old leaf is copied into the leading corner of
    the optimizer's fresh state for `new_params`, so old moments (and counters) carry over and the new
    tokens' moments start at the optimizer's init (zero for Adam, Lion, SGD momentum)."""
    fresh = tx.init(nn.meta.unbox(new_params))

    def carry(old: jax.Array, new: jax.Array) -> jax.Array:
        if old.shape == new.shape:
            return old
        if old.ndim != new.ndim or any(o > n for o, n in zip(old.shape, new.shape)):
            raise ValueError(f"optimizer state leaf {old.shape} does not fit its grown shape {new.shape}")
        return new.at[tuple(slice(0, o) for o in old.shape)].set(old)

    return jax.tree.map(carry, nn.meta.unbox(opt_state), fresh)


def grow_train_state(
    state: TrainState,
    cfg: ModelConfig,
    tx: optax.GradientTransformation,
    new_num_param_tokens: int,
    **kw: Any,
) -> tuple[TrainState, ModelConfig]:
    """`grow` for a `TrainState`: params, EMA params and optimizer state; step and RNG kept.

    `kw` goes to `grow` (`new_num_param_tokens_ffn`, `key`)."""
    params, new_cfg = grow(state.params, cfg, new_num_param_tokens, **kw)
    ema = None if state.ema_params is None else grow(state.ema_params, cfg, new_num_param_tokens, **kw)[0]
    opt_state = grow_opt_state(state.opt_state, params, tx)
    return state.replace(params=params, opt_state=opt_state, ema_params=ema), new_cfg


def grow_checkpoint(
    src_workdir: str, cfg: ExperimentConfig, dst_workdir: str, new_num_param_tokens: int, **kw: Any
) -> ExperimentConfig:
    """Restores the latest checkpoint of the run `cfg` in `src_workdir`, grows it and saves it with
    its data position into `dst_workdir`'s checkpoint directory at the same step -> the grown run's
    config. The whole `TrainState` is restored (the optimizer moments carry over), so its abstract
    state comes from the run's `Trainer`; `rocket.train.restore.restore_run` reads params only."""
    with Checkpointer(run_checkpoint_dir(src_workdir), read_only=True) as src:
        state, data_state, _ = src.restore(None, Trainer.build(cfg).abstract_state())
    tx, _ = make_optimizer(cfg.optim, cfg.train.steps, cfg.data.batch_size * cfg.data.seq_len)
    state, model_cfg = grow_train_state(jax.device_get(state), cfg.model, tx, new_num_param_tokens, **kw)
    new_cfg = dataclasses.replace(
        cfg, model=model_cfg, train=dataclasses.replace(cfg.train, workdir=dst_workdir)
    )
    with Checkpointer(run_checkpoint_dir(dst_workdir)) as dst:
        dst.save(int(state.step), state, data_state=data_state, meta={"config": to_dict(new_cfg)}, force=True)
    return new_cfg
