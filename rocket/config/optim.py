"""`optim`: the optax optimizer and learning-rate schedule (`rocket.train.optim`)."""

from __future__ import annotations

import dataclasses

from rocket.config.base import Section, check, choice

OPTIMIZERS = ("adamw", "adafactor", "lion", "sgd", "spam", "adamp")
SCHEDULES = ("cosine", "constant", "linear", "wsd", "power")


@dataclasses.dataclass(frozen=True)
class OptimConfig(Section):
    """optax optimizer and learning-rate schedule.

    Attributes:
      name: "adamw" (optax.adamw) or "adafactor", "lion", "sgd", "spam" (spike-aware Adam with
        momentum reset), "adamp" (Adam with the radial component projected out); see
        `rocket.train.optimizers`.
      lr: peak learning rate.
      schedule: "cosine" (linear warmup + cosine decay), "constant" (warmup then constant),
        "linear" (warmup + linear decay), "wsd" (warmup-stable-decay: linear decay over the last
        `decay_fraction` of the post-warmup steps), "power" (Power scheduler: min(lr, a * n**b) in
        tokens seen n, exponential decay to `min_lr_ratio` over the last `decay_fraction`).
      warmup_steps: linear warmup length in steps.
      min_lr_ratio: final learning rate as a fraction of `lr`, in [0, 1].
      decay_fraction: for "wsd", the fraction of the run spent decaying, in (0, 1].
      b1, b2, eps: Adam moments.
      weight_decay: decoupled weight decay, applied to matrices only (not to norm scales).
      grad_clip: global-norm clipping threshold (0 disables).
      spam_theta: SPAM spike threshold: g**2 > theta * v marks a spike.
      spam_reset_interval: SPAM zeroes both moments every this many steps.
      spam_clip_skip: steps after each reset without spike clipping (v is still near zero).
      spam_warmup_steps: cosine learning-rate warmup (0.01 -> 1) after every reset (0 disables).
      adamp_delta: AdamP's scale-invariance threshold (cosine < delta / sqrt(dim)).
      adamp_wd_ratio: AdamP's weight-decay multiplier on parameters found scale-invariant.
      power_a, power_b: Power scheduler law a * n**b (n = tokens seen; a absorbs the batch size).
    """

    name: str = choice("adamw", OPTIMIZERS)
    lr: float = 3e-3
    schedule: str = choice("cosine", SCHEDULES)
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # SPAM, AdamP and the Power scheduler (rocket.train.optimizers).
    spam_theta: float = 5000.0
    spam_reset_interval: int = 500
    spam_clip_skip: int = 20
    spam_warmup_steps: int = 150
    adamp_delta: float = 0.1
    adamp_wd_ratio: float = 0.1
    power_a: float = 4.6
    power_b: float = -0.51

    def validate(self) -> None:
        check(self.spam_theta > 0, "spam_theta", f"must be positive, got {self.spam_theta}")
        check(self.spam_reset_interval >= 1, "spam_reset_interval", "must be >= 1")
        check(
            1 <= self.spam_clip_skip < self.spam_reset_interval,
            "spam_clip_skip",
            f"must be in [1, spam_reset_interval={self.spam_reset_interval}), got {self.spam_clip_skip}",
        )
        check(
            0 <= self.spam_warmup_steps <= self.spam_reset_interval,
            "spam_warmup_steps",
            f"must be in [0, spam_reset_interval={self.spam_reset_interval}], got {self.spam_warmup_steps}",
        )
        check(self.adamp_delta > 0, "adamp_delta", f"must be positive, got {self.adamp_delta}")
        check(0.0 <= self.adamp_wd_ratio <= 1.0, "adamp_wd_ratio", "must be in [0, 1]")
        check(self.power_a > 0, "power_a", f"must be positive, got {self.power_a}")
        check(self.power_b < 0, "power_b", f"must be negative (a decaying law), got {self.power_b}")
        check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        check(
            0.0 < self.decay_fraction <= 1.0,
            "decay_fraction",
            f"must be in (0, 1], got {self.decay_fraction}",
        )
        check(0.0 <= self.b1 < 1.0, "b1", "must be in [0, 1)")
        check(0.0 <= self.b2 < 1.0, "b2", "must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
