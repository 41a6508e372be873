"""`train`: the training run (`rocket.train.loop`)."""

from __future__ import annotations

import dataclasses

from rocket.config.base import Section, check


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
    """The training run.

    Attributes:
      steps: total optimizer steps.
      microbatches: gradient accumulation: each step's batch is processed in this many sequential
        slices (less activation memory, the same update).
      seed: seeds parameters init, data order and the step RNG.
      workdir: checkpoints go to workdir/checkpoints, metrics to workdir/logs.
      log_every / eval_every / ckpt_every: intervals in steps (eval and checkpoint also run at
        the last step).
      keep_checkpoints: how many checkpoints to keep.
      sample_tokens: length of the sample generated at the end (0 disables).
      sample_prompt: its prompt.
      sample_temperature / sample_top_k / sample_top_p: its sampler.
      progress: show a progress bar.
      profile_steps: if > 0, record a JAX profiler trace (TensorBoard / Perfetto) of this many steps,
        starting at the third step of the run, into workdir/logs.
    """

    steps: int = 1000
    microbatches: int = 1
    seed: int = 0
    workdir: str = "runs/default"
    log_every: int = 10
    eval_every: int = 200
    ckpt_every: int = 200
    keep_checkpoints: int = 3
    sample_tokens: int = 200
    sample_prompt: str = "def "
    sample_temperature: float = 0.8
    sample_top_k: int = 0
    sample_top_p: float = 0.95
    progress: bool = True
    profile_steps: int = 0

    def validate(self) -> None:
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.microbatches >= 1, "microbatches", f"must be >= 1, got {self.microbatches}")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        for name in ("log_every", "eval_every", "ckpt_every", "keep_checkpoints"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.sample_tokens >= 0, "sample_tokens", "must be >= 0")
        check(self.profile_steps >= 0, "profile_steps", "must be >= 0")
        check(self.sample_temperature >= 0, "sample_temperature", "must be >= 0 (0 = greedy)")
        check(self.sample_top_k >= 0, "sample_top_k", "must be >= 0 (0 = off)")
        check(0.0 < self.sample_top_p <= 1.0, "sample_top_p", f"must be in (0, 1], got {self.sample_top_p}")
