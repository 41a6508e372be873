"""optax optimizers and learning-rate schedules, selected by `OptimConfig`."""

from __future__ import annotations

import jax
import optax

from rocket.config import OptimConfig


def make_schedule(ocfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup to `lr`, then the configured decay down to `lr * min_lr_ratio`.

    cosine: optax.warmup_cosine_decay_schedule over the whole run.
    linear: linear decay after warmup.
    constant: flat after warmup.
    wsd: warmup-stable-decay (Hu et al., 2024, MiniCPM): flat, then linear decay over the last
         `decay_fraction` of the run.
    """
    peak, end = ocfg.lr, ocfg.lr * ocfg.min_lr_ratio
    warmup = min(ocfg.warmup_steps, max(total_steps - 1, 0))
    if ocfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), end)
    ramp = optax.linear_schedule(0.0, peak, max(warmup, 1))
    rest = total_steps - warmup
    if ocfg.schedule == "constant":
        tail = optax.constant_schedule(peak)
    elif ocfg.schedule == "linear":
        tail = optax.linear_schedule(peak, end, max(rest, 1))
    else:  # wsd
        decay = max(int(round(rest * ocfg.decay_fraction)), 1)
        tail = optax.join_schedules(
            [optax.constant_schedule(peak), optax.linear_schedule(peak, end, decay)], [rest - decay]
        )
    return optax.join_schedules([ramp, tail], [warmup])


def _decay_mask(params):
    """Weight decay on weight matrices only, not on RMSNorm scales.

    Decided by name (a leaf called "scale"), not by rank: under `nn.scan` a norm scale is stacked to
    [L, D] and would look like a matrix.
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) != "scale", params)


def make_optimizer(
    ocfg: OptimConfig, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Gradient clipping by global norm, then the optimizer with the schedule. Returns (tx, schedule)."""
    schedule = make_schedule(ocfg, total_steps)
    if ocfg.name == "adamw":
        opt = optax.adamw(
            schedule, b1=ocfg.b1, b2=ocfg.b2, eps=ocfg.eps, weight_decay=ocfg.weight_decay, mask=_decay_mask
        )
    elif ocfg.name == "lion":
        opt = optax.lion(schedule, b1=ocfg.b1, b2=ocfg.b2, weight_decay=ocfg.weight_decay, mask=_decay_mask)
    elif ocfg.name == "adafactor":
        opt = optax.adafactor(
            schedule, weight_decay_rate=ocfg.weight_decay or None, weight_decay_mask=_decay_mask
        )
    else:
        opt = optax.chain(
            optax.add_decayed_weights(ocfg.weight_decay, _decay_mask), optax.sgd(schedule, ocfg.b1)
        )
    chain = [optax.clip_by_global_norm(ocfg.grad_clip)] if ocfg.grad_clip > 0 else []
    return optax.chain(*chain, opt), schedule
