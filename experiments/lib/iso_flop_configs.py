"""The ConfigDicts of the adaptive-depth config files (`experiments/configs/mo[dr]_*.py`, for
`python -m rocket.train --config ...`): MoD / MoR at equal training FLOPs on the built-in corpus.

Each routed model trains next to a dense baseline of (nearly) the same forward FLOPs per token
(`flops_per_token`, top-k routing as trained); the remaining gap is closed by scaling the number
of steps, so every run of a family spends the same total training FLOPs:

  steps(model) = round(BASE_STEPS * flops_per_token(baseline) / flops_per_token(model))

Evaluation uses causal routing (the honest number); the trainer's `model/*/causal_acc` metrics
show how well the causal rule tracks top-k during training.
"""

from __future__ import annotations

from rocket.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    override,
    to_config_dict,
)
from rocket.models import flops_per_token

SEQ_LEN = 256
BASE_STEPS = 600
SHAPE = dict(vocab_size=258, d_model=128, n_heads=4, n_kv_heads=2, max_seq_len=SEQ_LEN)


def routing_experiment(name: str, baseline_layers: int, **model: object):
    """ConfigDict of `name`: SHAPE changed by `model` (`rocket.config.override`), trained for the
    baseline's total FLOPs."""
    cfg = override(ModelConfig(**SHAPE), model)
    baseline = ModelConfig(**SHAPE, n_layers=baseline_layers)
    steps = round(BASE_STEPS * flops_per_token(baseline, SEQ_LEN) / flops_per_token(cfg, SEQ_LEN))
    return to_config_dict(
        ExperimentConfig(
            model=cfg,
            data=DataConfig(
                corpus="stdlib", tokenizer="byte", seq_len=SEQ_LEN, batch_size=16, eval_batches=8
            ),
            optim=OptimConfig(lr=3e-3, warmup_steps=30, schedule="cosine"),
            train=TrainConfig(
                steps=steps,
                workdir=f"runs/{name}",
                log_every=10,
                eval_every=200,
                ckpt_every=200,
                sample_tokens=0,
            ),
        )
    )
