"""``build_data``: corpus + tokenizer + token caches -> the train iterator and the eval batches."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from rocket.data.corpus import Corpus, prepare_corpus
from rocket.data.decomposition import DecompositionIterator, DecompositionSpec
from rocket.data.packing import DataError
from rocket.data.pipeline import (
    Batch,
    DataIterator,
    make_eval_batches,
    make_stream_iterator,
    make_train_iterator,
)
from rocket.data.tokenizers import Tokenizer, get_tokenizer
from rocket.data.tokens import tokenize_split


@dataclasses.dataclass
class Data:
    """Everything the trainer needs from the data side."""

    tokenizer: Tokenizer
    train: DataIterator | DecompositionIterator
    eval_batches: list[Batch]
    corpus: Corpus
    stats: dict[str, Any]  # {"train": {"docs", "bytes", "tokens"}, "validation": {...}, "eval": {...}}


def build_data(
    spec: str = "stdlib",
    tokenizer_name: str = "byte",
    *,
    seq_len: int,
    batch_size: int,
    seed: int = 0,
    val_fraction: float = 0.05,
    cache_dir: str | os.PathLike[str] | None = None,
    spm_vocab_size: int = 4096,
    eval_batches: int | None = 16,
    shard_index: int = 0,
    shard_count: int = 1,
    decomposition: DecompositionSpec | None = None,
    text_field: str = "text",
    split: str = "train",
    val_split: str = "",
    val_docs: int = 256,
    shuffle_window: int = 256,
) -> Data:
    """Prepares the corpus, tokenizer and token caches; returns train iterator + eval batches.

    Both splits are tokenized once and cached under ``<cache_dir>/tokens`` (see
    ``rocket.data.tokens``); ``stats[split]["tokens"]`` counts their targets.
    ``batch_size`` is per process. The model's vocab size must be
    ``data.tokenizer.vocab_size`` (SentencePiece may yield fewer pieces than
    ``spm_vocab_size`` on tiny corpora). With ``decomposition`` the train stream is a
    Dataset Decomposition iterator (``rocket.data.decomposition``; seq_len a power of two).
    ``text_field``, ``split``, ``val_split`` and ``val_docs`` are ``prepare_corpus``'s; a streamed
    (``hf:``) corpus trains through ``make_stream_iterator`` (``shuffle_window`` documents).
    """
    corpus = prepare_corpus(
        spec,
        val_fraction=val_fraction,
        cache_dir=cache_dir,
        text_field=text_field,
        split=split,
        val_split=val_split,
        val_docs=val_docs,
    )
    tokenizer = get_tokenizer(tokenizer_name, corpus=corpus, vocab_size=spm_vocab_size, cache_dir=cache_dir)
    streamed = ("validation",) if corpus.stream is not None else ()
    splits = {
        s: tokenize_split(corpus[s], tokenizer, key=f"{corpus.corpus_id}-{s}", cache_dir=cache_dir)
        for s in (streamed or ("train", "validation"))
    }
    if corpus.stream is not None:
        if decomposition is not None:
            raise DataError("dataset decomposition needs a prepared corpus, not a streamed (hf:) one")
        train = make_stream_iterator(
            corpus.stream,
            tokenizer,
            seq_len=seq_len,
            batch_size=batch_size,
            seed=seed,
            window=shuffle_window,
            shard_index=shard_index,
            shard_count=shard_count,
            held_out=corpus.stream.held_out(list(corpus["validation"])),
        )
    elif decomposition is None:
        train = make_train_iterator(
            splits["train"],
            tokenizer,
            seq_len=seq_len,
            batch_size=batch_size,
            seed=seed,
            shard_index=shard_index,
            shard_count=shard_count,
        )
    else:
        if seq_len & (seq_len - 1):
            raise DataError(f"dataset decomposition needs a power-of-two seq_len, got {seq_len}")
        train = DecompositionIterator(
            splits["train"],
            tokenizer.token_num_bytes,
            max_log2=seq_len.bit_length() - 1,
            min_log2=decomposition.min_log2,
            batch_size=batch_size,
            seed=seed,
            curriculum=decomposition.curriculum,
            cycles=decomposition.cycles,
            shard_index=shard_index,
            shard_count=shard_count,
        )
    evals = make_eval_batches(
        splits["validation"],
        tokenizer,
        seq_len=seq_len,
        batch_size=batch_size,
        max_batches=eval_batches,
        shard_index=shard_index,
        shard_count=shard_count,
    )
    stats: dict[str, Any] = {s: dict(v) for s, v in corpus.stats.items()}
    for s, tokens in splits.items():
        stats[s]["tokens"] = tokens.num_targets
    stats["train"].setdefault("tokens", None)  # streamed: unknown
    stats["eval"] = {
        "batches": len(evals),
        "tokens": int(sum(b["weights"].sum() for b in evals)),
        "bytes": int(sum(b["num_bytes"].sum() for b in evals)),
    }
    return Data(tokenizer=tokenizer, train=train, eval_batches=evals, corpus=corpus, stats=stats)


def corpus_options(dc: Any) -> dict[str, Any]:
    """``prepare_corpus``'s keyword arguments from a ``DataConfig`` (``rocket.config.data``)."""
    return dict(
        val_fraction=dc.val_fraction,
        cache_dir=dc.cache_dir or None,
        text_field=dc.text_field,
        split=dc.split,
        val_split=dc.val_split,
        val_docs=dc.val_docs,
    )
