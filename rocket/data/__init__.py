"""Data: tokenizers, TFDS text corpora, packing and grain input pipelines."""

from rocket.data.corpus import Corpus, LocalText, TextSource, prepare_corpus
from rocket.data.packing import BATCH_KEYS, DataError, RoundPacker, pack_documents
from rocket.data.pipeline import (
    Data,
    DataIterator,
    PackedBatchIterDataset,
    build_data,
    make_eval_batches,
    make_train_iterator,
)
from rocket.data.tokenizers import (
    ByteTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    default_cache_dir,
    get_tokenizer,
)

__all__ = [
    "BATCH_KEYS",
    "ByteTokenizer",
    "Corpus",
    "Data",
    "DataError",
    "DataIterator",
    "LocalText",
    "PackedBatchIterDataset",
    "RoundPacker",
    "SentencePieceTokenizer",
    "TextSource",
    "Tokenizer",
    "build_data",
    "default_cache_dir",
    "get_tokenizer",
    "make_eval_batches",
    "make_train_iterator",
    "pack_documents",
    "prepare_corpus",
]
