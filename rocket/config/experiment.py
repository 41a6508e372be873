"""`ExperimentConfig`: the sections of one experiment and the checks that span sections."""

from __future__ import annotations

import dataclasses

from rocket.config.base import Section, check
from rocket.config.data import DataConfig
from rocket.config.loss import LossConfig
from rocket.config.model import ModelConfig
from rocket.config.optim import OptimConfig
from rocket.config.parallel import ParallelConfig
from rocket.config.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class ExperimentConfig(Section):
    """model / data / optim / parallel / train / loss, as in an `experiments/configs/*.py` file."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    parallel: ParallelConfig = ParallelConfig()
    train: TrainConfig = TrainConfig()
    loss: LossConfig = LossConfig()

    def validate(self) -> None:
        check(
            self.data.seq_len <= self.model.max_seq_len,
            "data.seq_len",
            f"seq_len={self.data.seq_len} is longer than model.max_seq_len={self.model.max_seq_len}",
        )
        check(
            self.data.batch_size % self.train.microbatches == 0,
            "train.microbatches",
            f"batch_size={self.data.batch_size} is not divisible into {self.train.microbatches} microbatches",
        )
        if self.data.tokenizer == "sentencepiece":
            spm, extra = self.data.spm_vocab_size, " (+1 for MEAP's mask)" if self.loss.meap_rate > 0 else ""
            check(
                self.model.vocab_size in ((spm, spm + 1) if self.loss.meap_rate > 0 else (spm,)),
                "model.vocab_size",
                f"model.vocab_size={self.model.vocab_size} disagrees with data.spm_vocab_size={spm}, the "
                f"size of the SentencePiece vocabulary trained for it; set both to the same size{extra}",
            )
        check(
            self.loss.meap_mask_id < self.model.vocab_size,
            "loss.meap_mask_id",
            f"{self.loss.meap_mask_id} is not below model.vocab_size={self.model.vocab_size}",
        )
