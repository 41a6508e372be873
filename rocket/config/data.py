"""`data`: where tokens come from (`rocket.data`)."""

from __future__ import annotations

import dataclasses

from rocket.config.base import Section, check, choice

TOKENIZERS = ("byte", "sentencepiece")
DD_CURRICULA = ("grow_p2", "uniform")


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """Where tokens come from.

    Attributes:
      corpus: "stdlib" (this Python's standard-library sources, the built-in corpus), a folder or a
        glob of text files (split by file), one text file (split by bytes), JSONL / Parquet files
        (a path or glob ending in .jsonl / .json / .parquet; one document per record), or
        "hf:<name>[:<config>]" for a Hugging Face dataset (hub id or local folder), streamed.
      text_field: the records' text field (JSONL / Parquet / hf:).
      split: the training split of an hf: corpus.
      val_split: the validation split of an hf: corpus ("" = the first val_docs records of `split`,
        which training then skips).
      val_docs: validation records read from an hf: corpus.
      shuffle_window: an hf: corpus's chunks are shuffled within windows of this many documents.
      tokenizer: "byte" (vocab 258) or "sentencepiece" (BPE trained locally on the corpus).
      spm_vocab_size: vocabulary size of the locally trained SentencePiece model.
      seq_len: tokens per packed training row.
      batch_size: rows per global batch (split over the data-parallel axes).
      val_fraction: fraction held out for validation, in (0, 1): of the files (by path hash) of a
        folder or glob, of the bytes of one text file, of the records of JSONL / Parquet files.
      eval_batches: number of validation batches per evaluation.
      cache_dir: where prepared corpora and tokenizers are cached ("" = ~/.cache/rocket or
        $ROCKET_CACHE_DIR).
      decomposition: train on Dataset Decomposition buckets (Pouransari et al., 2024,
        arXiv 2405.13226; `rocket.data.decomposition`): documents cut into power-of-two chunks,
        one bucket per step with `batch_size * seq_len` tokens (seq_len must be a power of two,
        the longest bucket). Evaluation keeps the packed `seq_len` batches.
      dd_min_log2: the shortest bucket is 2**dd_min_log2 tokens; shorter document tails are dropped.
      dd_curriculum: "grow_p2" (bucket odds x 2**(max - i): short to long) or "uniform" (odds
        proportional to the bucket's remaining tokens only: a random order, no trend).
      dd_cycles: curriculum cycles per epoch (each cycle replays short-to-long on 1/cycles of the data).
    """

    corpus: str = "stdlib"
    text_field: str = "text"
    split: str = "train"
    val_split: str = ""
    val_docs: int = 256
    shuffle_window: int = 256
    tokenizer: str = choice("byte", TOKENIZERS)
    spm_vocab_size: int = 4096
    seq_len: int = 256
    batch_size: int = 16
    val_fraction: float = 0.05
    eval_batches: int = 8
    cache_dir: str = ""
    # Dataset decomposition (rocket.data.decomposition).
    decomposition: bool = False
    dd_min_log2: int = 5
    dd_curriculum: str = choice("grow_p2", DD_CURRICULA)
    dd_cycles: int = 1

    def validate(self) -> None:
        check(self.seq_len >= 2, "seq_len", f"must be >= 2, got {self.seq_len}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(0.0 < self.val_fraction < 1.0, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        check(self.val_docs >= 1, "val_docs", f"must be >= 1, got {self.val_docs}")
        check(self.shuffle_window >= 1, "shuffle_window", f"must be >= 1, got {self.shuffle_window}")
        check(self.eval_batches >= 1, "eval_batches", f"must be >= 1, got {self.eval_batches}")
        check(
            self.spm_vocab_size >= 268,
            "spm_vocab_size",
            f"must be >= 268 (4 specials + 256 byte pieces + merges), got {self.spm_vocab_size}",
        )
        if self.decomposition:
            check(
                self.seq_len & (self.seq_len - 1) == 0,
                "seq_len",
                f"dataset decomposition needs a power-of-two seq_len, got {self.seq_len}",
            )
            check(
                1 <= self.dd_min_log2 and 2**self.dd_min_log2 <= self.seq_len,
                "dd_min_log2",
                f"must be >= 1 with 2**dd_min_log2 <= seq_len={self.seq_len}, got {self.dd_min_log2}",
            )
        check(self.dd_cycles >= 1, "dd_cycles", f"must be >= 1, got {self.dd_cycles}")
