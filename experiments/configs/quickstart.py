"""Quickstart: a 0.8M-parameter byte-level decoder on this Python's standard library, ~3 min on 2 CPU cores.

python -m rocket.train --config experiments/configs/quickstart.py [--config.train.steps=600 ...]
"""

from rocket.config import DataConfig, ExperimentConfig, ModelConfig, OptimConfig, TrainConfig, to_config_dict


def get_config():
    return to_config_dict(
        ExperimentConfig(
            model=ModelConfig(
                vocab_size=258, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=128
            ),
            data=DataConfig(corpus="stdlib", tokenizer="byte", seq_len=128, batch_size=16, eval_batches=8),
            optim=OptimConfig(lr=3e-3, warmup_steps=30, schedule="cosine"),
            train=TrainConfig(
                steps=800,
                workdir="runs/quickstart",
                log_every=10,
                eval_every=200,
                ckpt_every=200,
                sample_tokens=120,
                sample_prompt="def ",
                sample_temperature=0.7,
            ),
        )
    )
