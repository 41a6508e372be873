"""optax optimizers and learning-rate schedules, selected by `OptimConfig`."""

from __future__ import annotations

import jax
import optax

from rocket.config import OptimConfig
from rocket.train.optimizers import power_schedule, scale_by_adamp, scale_by_spam


def make_schedule(ocfg: OptimConfig, total_steps: int, tokens_per_step: int | None = None) -> optax.Schedule:
    """Linear warmup to `lr`, then the configured decay down to `lr * min_lr_ratio`.

    cosine: optax.warmup_cosine_decay_schedule over the whole run.
    linear: linear decay after warmup.
    constant: flat after warmup.
    wsd: warmup-stable-decay (Hu et al., 2024, MiniCPM): flat, then linear decay over the last
         `decay_fraction` of the post-warmup steps.
    power: the Power scheduler (`rocket.train.optimizers.power_schedule`) with lr as its cap and
         an exponential decay to `lr * min_lr_ratio` over the last `decay_fraction` of the run;
         needs `tokens_per_step`.
    """
    peak, end = ocfg.lr, ocfg.lr * ocfg.min_lr_ratio
    warmup = min(ocfg.warmup_steps, max(total_steps - 1, 0))
    if ocfg.schedule == "power":
        if tokens_per_step is None:
            raise ValueError("the 'power' schedule needs tokens_per_step")
        return power_schedule(
            lr_max=peak,
            a=ocfg.power_a,
            b=ocfg.power_b,
            tokens_per_step=tokens_per_step,
            warmup_steps=warmup,
            decay_steps=int(round((total_steps - warmup) * ocfg.decay_fraction)),
            total_steps=total_steps,
            final_factor=ocfg.min_lr_ratio,
        )
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
    ocfg: OptimConfig, total_steps: int, tokens_per_step: int | None = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Gradient clipping by global norm, then the optimizer with the schedule. Returns (tx, schedule).

    `tokens_per_step` (global batch tokens) is needed by the "power" schedule only.
    """
    schedule = make_schedule(ocfg, total_steps, tokens_per_step)
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
    elif ocfg.name == "spam":
        opt = optax.chain(
            scale_by_spam(
                ocfg.b1,
                ocfg.b2,
                ocfg.eps,
                theta=ocfg.spam_theta,
                reset_interval=ocfg.spam_reset_interval,
                clip_skip=ocfg.spam_clip_skip,
                warmup_steps=ocfg.spam_warmup_steps,
            ),
            optax.add_decayed_weights(ocfg.weight_decay, _decay_mask),
            optax.scale_by_learning_rate(schedule),
        )
    elif ocfg.name == "adamp":
        opt = optax.chain(
            scale_by_adamp(
                ocfg.b1,
                ocfg.b2,
                ocfg.eps,
                weight_decay=ocfg.weight_decay,
                delta=ocfg.adamp_delta,
                wd_ratio=ocfg.adamp_wd_ratio,
                mask=_decay_mask,
            ),
            optax.scale_by_learning_rate(schedule),
        )
    else:
        opt = optax.chain(
            optax.add_decayed_weights(ocfg.weight_decay, _decay_mask), optax.sgd(schedule, ocfg.b1)
        )
    chain = [optax.clip_by_global_norm(ocfg.grad_clip)] if ocfg.grad_clip > 0 else []
    return optax.chain(*chain, opt), schedule
