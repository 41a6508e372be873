"""grain input pipeline: corpus -> token cache -> globally shuffled chunks -> packed batches.

(Streamed ``hf:`` corpora skip the token cache: ``make_stream_iterator``, ``rocket.data.stream``.)

Train stream (per process)::

    tokenize_split(split)                       # flat tokens [N] + doc_starts [D+1], cached
    ChunkIndex.build(doc_starts, seq_len)       # every chunk of every document: [C]
    MapDataset.source(ChunkSource)[shard_index::shard_count]   # per-host chunks
      .shuffle(seed).repeat()        # new permutation of all chunks every epoch, infinite
      .to_iter_dataset()             # int32 [m] token chunk (slice of the memmap), no threads
    -> PackedBatchIterDataset         # first-fit pack, see packing.py

Every batch draws its chunks from across the whole split. The iterator state is
``{"meta": {...}, "grain": <grain state before the next chunk to pack>}``:
JSON-serialisable and exact (a restored iterator yields bitwise the same batches).
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from rocket.data.packing import ChunkIndex, DataError, RoundPacker, pack_chunks
from rocket.data.sources.hf import HFStream
from rocket.data.stream import StreamChunks
from rocket.data.tokenizers import Tokenizer
from rocket.data.tokens import TokenizedSplit, tokenize_split

Batch = dict[str, np.ndarray]  # each [batch, seq]; keys: packing.BATCH_KEYS


class ChunkSource:
    """Random access to the chunks of a tokenized split: ``src[i]`` -> int32 ``[m]``."""

    def __init__(self, split: TokenizedSplit, seq_len: int) -> None:
        self.tokens = split.tokens  # [N]
        self.index = ChunkIndex.build(split.doc_starts, seq_len)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.index.start[i])
        return np.array(self.tokens[start : start + int(self.index.length[i])], np.int32)

    def __repr__(self) -> str:
        return f"ChunkSource(len={len(self)})"


class _PackedBatchIterator(grain.DatasetIterator):
    """Checkpointable iterator of packed batches over an iterator of token chunks."""

    def __init__(
        self, parent: grain.DatasetIterator, *, seq_len: int, batch_size: int, token_num_bytes: np.ndarray
    ) -> None:
        super().__init__(parent)
        self._packer = RoundPacker(batch_size, seq_len, token_num_bytes)
        self._chunk: np.ndarray | None = None  # [m] read but not yet packed (opens the next batch)
        self._chunk_state: Any = None  # parent state just before self._chunk

    def __next__(self) -> Batch:
        while True:
            if self._chunk is None:
                state = self._parent.get_state()
                try:
                    self._chunk = next(self._parent)
                except StopIteration:
                    if self._packer.is_empty:
                        raise
                    return self._packer.flush()
                self._chunk_state = state
            if not self._packer.add(self._chunk):
                return self._packer.flush()  # self._chunk opens the next batch
            self._chunk = None

    def get_state(self) -> Any:
        if not self._packer.is_empty:  # only possible at the end of a finite stream
            raise DataError("cannot checkpoint a partially packed batch")
        return self._parent.get_state() if self._chunk is None else self._chunk_state

    def set_state(self, state: Any) -> None:
        self._parent.set_state(state)
        self._packer.flush()
        self._chunk, self._chunk_state = None, None


class PackedBatchIterDataset(grain.IterDataset):
    """grain IterDataset: token chunks int [m] -> packed batch dicts [batch, seq] (first-fit)."""

    def __init__(
        self, parent: grain.IterDataset, *, seq_len: int, batch_size: int, token_num_bytes: np.ndarray
    ) -> None:
        super().__init__(parent)
        self._kw = dict(
            seq_len=seq_len, batch_size=batch_size, token_num_bytes=np.asarray(token_num_bytes, np.int32)
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


def _tokenized(source: Any, tokenizer: Tokenizer) -> TokenizedSplit:
    """``source`` itself if already tokenized, else its in-memory tokenization."""
    if not isinstance(source, TokenizedSplit):
        return tokenize_split(source, tokenizer)
    if source.vocab_size != tokenizer.vocab_size:
        raise DataError(
            f"split tokenized with vocab {source.vocab_size}, tokenizer has {tokenizer.vocab_size}"
        )
    return source


def _check_shard(shard_index: int, shard_count: int) -> None:
    if not 0 <= shard_index < shard_count:
        raise DataError(f"bad shard {shard_index} of {shard_count}")


def _shuffle_seed(seed: int) -> int:
    """Scrambled ``seed``: grain reshuffles epoch e with seed + e; seed s + 1 must not replay s's epoch 1."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0])


def make_train_iterator(
    source: Any,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> DataIterator:
    """Infinite stream of packed ``[batch_size, seq_len]`` batches of globally shuffled chunks.

    ``source`` is a :class:`TokenizedSplit` (e.g. cached by ``tokenize_split``)
    or a random-access text source (``len``, ``src[i] -> bytes``; tokenized in
    memory). All chunks of the split are reshuffled every epoch; this process
    reads only chunks ``shard_index::shard_count`` of the chunk index.
    ``batch_size`` is the per-process batch; ``seed`` >= 0.
    """
    _check_shard(shard_index, shard_count)
    split = _tokenized(source, tokenizer)
    chunks = ChunkSource(split, seq_len)
    ds = grain.MapDataset.source(chunks)
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    if len(ds) == 0:
        raise DataError(
            f"shard {shard_index}/{shard_count} has no chunks (split has {len(chunks)}); use fewer hosts"
        )
    ds = ds.shuffle(seed=_shuffle_seed(seed)).repeat()
    it_ds = PackedBatchIterDataset(
        # A chunk read is a memmap slice: read-ahead threads would only add overhead.
        ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)),
        seq_len=seq_len,
        batch_size=batch_size,
        token_num_bytes=tokenizer.token_num_bytes,
    )
    meta = {
        "seed": seed,
        "shard_index": shard_index,
        "shard_count": shard_count,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "vocab_size": int(tokenizer.vocab_size),
        "num_docs": split.num_docs,
        "num_chunks": len(chunks),
    }
    return DataIterator(it_ds, meta)


def make_stream_iterator(
    stream: HFStream,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    window: int = 256,
    shard_index: int = 0,
    shard_count: int = 1,
    held_out: frozenset[bytes] = frozenset(),
) -> DataIterator:
    """Infinite packed ``[batch_size, seq_len]`` batches of a streamed corpus (``rocket.data.stream``).

    This process reads its shard of the records, less those whose text is in ``held_out`` (the
    validation texts, ``HFStream.held_out``); chunks are shuffled within windows of ``window``
    documents. The state is JSON-serialisable and exact, as in make_train_iterator.
    """
    _check_shard(shard_index, shard_count)
    kw = dict(seq_len=seq_len, seed=seed, window=window, shard_index=shard_index, shard_count=shard_count)
    it_ds = PackedBatchIterDataset(
        StreamChunks(stream, tokenizer, held_out=held_out, **kw),
        seq_len=seq_len,
        batch_size=batch_size,
        token_num_bytes=tokenizer.token_num_bytes,
    )
    meta = {
        **kw,
        "batch_size": batch_size,
        "vocab_size": int(tokenizer.vocab_size),
        "corpus": stream.corpus_id,
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
    """Deterministic eval batches over ``source`` (as in make_train_iterator).

    The chunks of the split are taken in one fixed pseudo-random order (seed 0, independent of the
    training seed), so a partial evaluation (``max_batches``) samples the whole split rather than
    its first few documents; ``max_batches=None`` covers every chunk once. The last batch is padded
    with weight-0 rows. With ``shard_count > 1`` each process packs documents
    ``shard_index::shard_count`` and gets exactly ``max_batches`` batches
    (all-padding ones if it runs out), so every host runs the same number of eval steps.
    """
    _check_shard(shard_index, shard_count)
    if shard_count > 1 and max_batches is None:
        raise DataError("sharded eval needs max_batches (equal step counts per host)")
    if max_batches is not None and max_batches <= 0:
        return []
    chunks = ChunkSource(_tokenized(source, tokenizer), seq_len)
    first = chunks.index.doc_first  # [D + 1]
    mine = [np.arange(first[d], first[d + 1]) for d in range(shard_index, len(first) - 1, shard_count)]
    ids = np.random.default_rng(0).permutation(np.concatenate(mine)) if mine else np.zeros(0, np.int64)
    batches: list[Batch] = []
    for batch in pack_chunks(
        (chunks[c] for c in ids),
        seq_len=seq_len,
        batch_size=batch_size,
        token_num_bytes=tokenizer.token_num_bytes,
    ):
        batches.append(batch)
        if max_batches is not None and len(batches) >= max_batches:
            break
    while shard_count > 1 and len(batches) < max_batches:
        batches.append(_empty_batch(batch_size, seq_len))
    return batches
