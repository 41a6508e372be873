"""Data: tokenizers, TFDS text corpora, token caches, packing and grain input pipelines."""

from rocket.data.corpus import Corpus, LocalText, TextSource, prepare_corpus
from rocket.data.packing import (
    BATCH_KEYS,
    ChunkIndex,
    DataError,
    RoundPacker,
    pack_chunks,
    pack_documents,
    random_batch,
)
from rocket.data.pipeline import (
    ChunkSource,
    Data,
    DataIterator,
    PackedBatchIterDataset,
    build_data,
    make_eval_batches,
    make_train_iterator,
)
from rocket.data.tokenizers import (
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    default_cache_dir,
    get_tokenizer,
)
from rocket.data.tokens import TokenizedSplit, tokenize_split

__all__ = [
    "BATCH_KEYS",
    "ByteTokenizer",
    "ChunkIndex",
    "ChunkSource",
    "Corpus",
    "Data",
    "DataError",
    "DataIterator",
    "HFTokenizer",
    "LocalText",
    "PackedBatchIterDataset",
    "RoundPacker",
    "SentencePieceTokenizer",
    "TextSource",
    "TokenizedSplit",
    "Tokenizer",
    "build_data",
    "default_cache_dir",
    "get_tokenizer",
    "make_eval_batches",
    "make_train_iterator",
    "pack_chunks",
    "pack_documents",
    "prepare_corpus",
    "random_batch",
    "tokenize_split",
]
