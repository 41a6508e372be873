"""Data: tokenizers, text corpora (files, JSONL/Parquet, streamed Hugging Face datasets), token caches,
packing and grain input pipelines."""

from rocket.data.build import Data, build_data
from rocket.data.corpus import Corpus, prepare_corpus
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
    DataIterator,
    PackedBatchIterDataset,
    make_eval_batches,
    make_stream_iterator,
    make_train_iterator,
)
from rocket.data.sources.files import FileText
from rocket.data.sources.hf import HFStream
from rocket.data.sources.records import RecordText
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
    "FileText",
    "HFStream",
    "HFTokenizer",
    "PackedBatchIterDataset",
    "RecordText",
    "RoundPacker",
    "SentencePieceTokenizer",
    "TokenizedSplit",
    "Tokenizer",
    "build_data",
    "default_cache_dir",
    "get_tokenizer",
    "make_eval_batches",
    "make_stream_iterator",
    "make_train_iterator",
    "pack_chunks",
    "pack_documents",
    "prepare_corpus",
    "random_batch",
    "tokenize_split",
]
