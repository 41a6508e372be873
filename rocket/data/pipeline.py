"""grain input pipeline: corpus -> shuffled documents -> tokens -> packed batches.

Train stream (per process)::

    MapDataset.source(split)[shard_index::shard_count]   # per-host documents
      .shuffle(seed).repeat()        # new permutation every epoch, infinite
      .map(tokenize)                 # int32 [n] per document, no BOS
      .to_iter_dataset(read_options) # threaded read/tokenize ahead
    -> PackedBatchIterDataset         # BOS + chunk + first-fit pack, see packing.py

The iterator state is ``{"meta": {...}, "grain": {"doc_state": <grain state
before the current document>, "chunk": k}}``: JSON-serialisable and exact
(a restored iterator yields bitwise the same batches).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import grain
import numpy as np

from rocket.data.corpus import Corpus, prepare_corpus
from rocket.data.packing import (
    DataError,
    RoundPacker,
    get_chunk,
    num_chunks,
    pack_documents,
    validate_token_ids,
    with_bos,
)
from rocket.data.tokenizers import Tokenizer, get_tokenizer

Batch = dict[str, np.ndarray]  # each [batch, seq]; keys: packing.BATCH_KEYS


class _Tokenize(grain.transforms.Map):
    """Document bytes -> int32 token ids [n] (no BOS)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer

    def map(self, element: bytes) -> np.ndarray:
        return self._tokenizer.encode(element)


class _PackedBatchIterator(grain.DatasetIterator):
    """Checkpointable iterator of packed batches over a token-array iterator."""

    def __init__(
        self,
        parent: grain.DatasetIterator,
        *,
        seq_len: int,
        batch_size: int,
        bos_id: int,
        token_num_bytes: np.ndarray,
    ) -> None:
        super().__init__(parent)
        self._packer = RoundPacker(batch_size, seq_len, token_num_bytes)
        self._seq_len = seq_len
        self._bos_id = bos_id
        self._vocab_size = len(token_num_bytes)
        self._doc: np.ndarray | None = None  # [n] current document, BOS included
        self._doc_state: Any = None  # parent state just before the current doc
        self._chunk = 0  # next chunk of the current document to pack
        self._skip = 0  # chunks to skip in the next document (after set_state)

    def _load_next_doc(self) -> bool:
        state = self._parent.get_state()
        try:
            doc = next(self._parent)
        except StopIteration:
            return False
        validate_token_ids(doc, self._vocab_size)
        self._doc_state, self._doc = state, with_bos(doc, self._bos_id)
        self._chunk, self._skip = self._skip, 0
        return True

    def __next__(self) -> Batch:
        while True:
            if self._doc is None and not self._load_next_doc():
                if self._packer.is_empty:
                    raise StopIteration
                return self._packer.flush()
            assert self._doc is not None
            n = num_chunks(self._doc.shape[0], self._seq_len)
            while self._chunk < n:
                if not self._packer.add(get_chunk(self._doc, self._chunk, self._seq_len)):
                    return self._packer.flush()  # this chunk opens the next batch
                self._chunk += 1
            self._doc = None

    def get_state(self) -> dict[str, Any]:
        if not self._packer.is_empty:  # only possible at the end of a finite stream
            raise DataError("cannot checkpoint a partially packed batch")
        if self._doc is None:
            return {"doc_state": self._parent.get_state(), "chunk": self._skip}
        return {"doc_state": self._doc_state, "chunk": self._chunk}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["doc_state"])
        self._packer.flush()
        self._doc, self._doc_state, self._chunk = None, None, 0
        self._skip = int(state["chunk"])


class PackedBatchIterDataset(grain.IterDataset):
    """grain IterDataset: token arrays [n] -> packed batch dicts [batch, seq]."""

    def __init__(
        self,
        parent: grain.IterDataset,
        *,
        seq_len: int,
        batch_size: int,
        bos_id: int,
        token_num_bytes: np.ndarray,
    ) -> None:
        super().__init__(parent)
        self._kw = dict(
            seq_len=seq_len,
            batch_size=batch_size,
            bos_id=bos_id,
            token_num_bytes=np.asarray(token_num_bytes, np.int32),
        )

    def __iter__(self) -> _PackedBatchIterator:
        return _PackedBatchIterator(self._parent.__iter__(), **self._kw)

    def __str__(self) -> str:
        return f"PackedBatchIterDataset(seq_len={self._kw['seq_len']}, batch_size={self._kw['batch_size']})"


class DataIterator:
    """Infinite iterator of train batches with JSON-serialisable state."""

    def __init__(self, dataset: grain.IterDataset, meta: dict[str, Any]) -> None:
        self._dataset = dataset
        self._it = iter(dataset)
        self.meta = meta  # checked on set_state: seed, shard, shapes, vocab

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> Batch:
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        return {"meta": dict(self.meta), "grain": self._it.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("meta") != self.meta:
            raise DataError(
                f"data iterator state was saved for {state.get('meta')}, but this iterator is {self.meta}"
            )
        self._it.set_state(state["grain"])


def _shard(source: Any, shard_index: int, shard_count: int) -> grain.MapDataset:
    if not 0 <= shard_index < shard_count:
        raise DataError(f"bad shard {shard_index} of {shard_count}")
    ds = grain.MapDataset.source(source)
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    if len(ds) == 0:
        raise DataError(
            f"shard {shard_index}/{shard_count} has no documents "
            f"(split has {len(source)}); use fewer hosts or more files"
        )
    return ds


def make_train_iterator(
    source: Any,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    read_threads: int = 2,
) -> DataIterator:
    """Infinite, reshuffled-per-epoch stream of packed ``[batch_size, seq_len]`` batches.

    ``source`` is random access (``len``, ``src[i] -> bytes``); this process
    reads only documents ``shard_index::shard_count``. ``batch_size`` is the
    per-process batch. ``seed`` must be in [0, 2**32).
    """
    ds = _shard(source, shard_index, shard_count).shuffle(seed=seed).repeat().map(_Tokenize(tokenizer))
    read = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=64)
    it_ds = PackedBatchIterDataset(
        ds.to_iter_dataset(read),
        seq_len=seq_len,
        batch_size=batch_size,
        bos_id=tokenizer.bos_id,
        token_num_bytes=tokenizer.token_num_bytes,
    )
    meta = {
        "seed": seed,
        "shard_index": shard_index,
        "shard_count": shard_count,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "vocab_size": int(tokenizer.vocab_size),
        "num_docs": len(source),
    }
    return DataIterator(it_ds, meta)


def _empty_batch(batch_size: int, seq_len: int) -> Batch:
    packer = RoundPacker(batch_size, seq_len, np.zeros(1, np.int32))
    return packer.flush()


def make_eval_batches(
    source: Any,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    max_batches: int | None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> list[Batch]:
    """Deterministic eval batches over ``source`` from its first document.

    The last batch is padded with weight-0 rows. With ``shard_count > 1``
    each process packs documents ``shard_index::shard_count`` and gets exactly
    ``max_batches`` batches (all-padding ones if it runs out), so every host
    runs the same number of eval steps.
    """
    if shard_count > 1 and max_batches is None:
        raise DataError("sharded eval needs max_batches (equal step counts per host)")
    if max_batches is not None and max_batches <= 0:
        return []
    docs = (tokenizer.encode(source[i]) for i in range(shard_index, len(source), shard_count))
    batches: list[Batch] = []
    for batch in pack_documents(
        docs,
        seq_len=seq_len,
        batch_size=batch_size,
        bos_id=tokenizer.bos_id,
        token_num_bytes=tokenizer.token_num_bytes,
    ):
        batches.append(batch)
        if max_batches is not None and len(batches) >= max_batches:
            break
    while shard_count > 1 and len(batches) < max_batches:
        batches.append(_empty_batch(batch_size, seq_len))
    return batches


@dataclasses.dataclass
class Data:
    """Everything the trainer needs from the data side."""

    tokenizer: Tokenizer
    train: DataIterator
    eval_batches: list[Batch]
    corpus: Corpus
    stats: dict[str, Any]  # {"train": {"docs", "bytes"}, "validation": {...}, "eval": {...}}


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
) -> Data:
    """Prepares the corpus and tokenizer; returns train iterator + eval batches.

    ``batch_size`` is per process. The model's vocab size must be
    ``data.tokenizer.vocab_size`` (SentencePiece may yield fewer pieces than
    ``spm_vocab_size`` on tiny corpora).
    """
    corpus = prepare_corpus(spec, val_fraction=val_fraction, cache_dir=cache_dir)
    tokenizer = get_tokenizer(tokenizer_name, corpus=corpus, vocab_size=spm_vocab_size, cache_dir=cache_dir)
    train = make_train_iterator(
        corpus["train"],
        tokenizer,
        seq_len=seq_len,
        batch_size=batch_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
    )
    evals = make_eval_batches(
        corpus["validation"],
        tokenizer,
        seq_len=seq_len,
        batch_size=batch_size,
        max_batches=eval_batches,
        shard_index=shard_index,
        shard_count=shard_count,
    )
    stats: dict[str, Any] = {s: dict(v) for s, v in corpus.stats.items()}
    stats["eval"] = {
        "batches": len(evals),
        "tokens": int(sum(b["weights"].sum() for b in evals)),
        "bytes": int(sum(b["num_bytes"].sum() for b in evals)),
    }
    return Data(tokenizer=tokenizer, train=train, eval_batches=evals, corpus=corpus, stats=stats)
