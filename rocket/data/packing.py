"""Pure-numpy chunking and packing of tokenized documents into fixed-shape batches.

Each document is prefixed with BOS and cut into *chunks* of at most
``seq_len + 1`` tokens that overlap by one token, so every token except the
leading BOS is a prediction target exactly once::

    doc (with BOS):  B t1 t2 t3 t4 t5 t6 t7       seq_len = 4
    chunks:          [B t1 t2 t3 t4] [t4 t5 t6 t7]
    inputs/targets:  chunk[:-1] / chunk[1:]

:class:`ChunkIndex` lists the chunks of a flat token array (documents back to
back, see ``rocket.data.tokens``). Chunks are packed first-fit into a *round* of
``batch_size`` rows of length ``seq_len``. A round is closed (emitted as one
batch) as soon as a chunk fits in none of its rows; that chunk opens the next
round. Because a batch boundary is always "between two chunks", the position in
the chunk stream is a complete, tiny checkpoint state.

Batch format (all ``[batch, seq]``):

* ``inputs``      int32  token ids fed to the model (0 = pad id on padding).
* ``targets``     int32  next-token ids (0 on padding).
* ``positions``   int32  0, 1, 2, ... restarting at every chunk. A chunk that
  continues a long document also starts at 0 (no cross-chunk context exists).
* ``segment_ids`` int32  1, 2, 3, ... per chunk within a row; 0 = padding.
* ``weights``     float32 1.0 on real targets, 0.0 on padding.
* ``num_bytes``   int32  UTF-8 bytes the target token stands for
  (``token_num_bytes[targets]``), 0 on padding. ``sum(loss) / sum(num_bytes) /
  ln 2`` is exact bits-per-byte.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

BATCH_KEYS: tuple[str, ...] = ("inputs", "targets", "positions", "segment_ids", "weights", "num_bytes")


class DataError(ValueError):
    """A user-facing data problem (bad corpus, bad token ids, ...)."""


def validate_token_ids(tokens: np.ndarray, vocab_size: int) -> None:
    """Raises DataError if any id in ``tokens`` [n] is outside [0, vocab_size)."""
    if tokens.size == 0:
        return
    hi, lo = int(tokens.max()), int(tokens.min())
    if hi >= vocab_size:
        raise DataError(
            f"token id {hi} is out of range for vocab_size {vocab_size} (tokenizer and model vocab disagree?)"
        )
    if lo < 0:
        raise DataError(f"negative token id {lo} (vocab_size {vocab_size})")


@dataclasses.dataclass(frozen=True)
class ChunkIndex:
    """The chunks of documents stored back to back in a flat token array.

    Document d (BOS included) is ``tokens[doc_starts[d]:doc_starts[d + 1]]``, n
    tokens; its chunks k = 0 .. ceil((n - 1) / seq_len) - 1 start at
    ``doc_starts[d] + k * seq_len`` and hold ``min(seq_len + 1, n - k * seq_len)``
    tokens (>= 2).
    """

    start: np.ndarray  # [C] int64 offset of each chunk in the token array
    length: np.ndarray  # [C] int64 tokens in each chunk, in [2, seq_len + 1]
    doc_first: np.ndarray  # [D + 1] int64: the chunks of document d are doc_first[d]:doc_first[d + 1]

    @classmethod
    def build(cls, doc_starts: np.ndarray, seq_len: int) -> ChunkIndex:
        """Chunks of ``seq_len + 1`` tokens for documents at ``doc_starts`` [D + 1]."""
        if seq_len <= 0:
            raise DataError(f"seq_len ({seq_len}) must be positive")
        doc_starts = np.asarray(doc_starts, np.int64)
        n = np.diff(doc_starts)  # [D] tokens per document, BOS included
        counts = np.maximum(0, -(-(n - 1) // seq_len))  # [D] chunks per document
        doc_first = np.concatenate([[0], np.cumsum(counts)])
        doc = np.repeat(np.arange(n.shape[0]), counts)  # [C] document of each chunk
        offset = (np.arange(doc.shape[0]) - doc_first[doc]) * seq_len  # [C] offset within the doc
        length = np.minimum(seq_len + 1, n[doc] - offset)
        return cls(doc_starts[doc] + offset, length, doc_first)

    def __len__(self) -> int:
        return int(self.start.shape[0])


class RoundPacker:
    """First-fit packer of chunks into one round of ``[num_rows, seq_len]``.

    ``add`` places a chunk into the first row with enough room, or returns
    False if no row has room (the caller then ``flush``-es and retries, which
    always succeeds on an empty round).
    """

    def __init__(self, num_rows: int, seq_len: int, token_num_bytes: np.ndarray) -> None:
        if num_rows <= 0 or seq_len <= 0:
            raise DataError(f"batch_size ({num_rows}) and seq_len ({seq_len}) must be positive")
        self.num_rows = num_rows
        self.seq_len = seq_len
        self.token_num_bytes = np.asarray(token_num_bytes, np.int32)  # [vocab]
        self._reset()

    def _reset(self) -> None:
        shape = (self.num_rows, self.seq_len)
        self._inputs = np.zeros(shape, np.int32)
        self._targets = np.zeros(shape, np.int32)
        self._positions = np.zeros(shape, np.int32)
        self._segment_ids = np.zeros(shape, np.int32)
        self._fill = np.zeros(self.num_rows, np.int64)  # [rows] used slots
        self._num_segments = np.zeros(self.num_rows, np.int32)  # [rows]

    @property
    def is_empty(self) -> bool:
        return not self._fill.any()

    def add(self, chunk: np.ndarray) -> bool:
        """Adds ``chunk`` [m] (2 <= m <= seq_len + 1); False if it fits nowhere."""
        n = chunk.shape[0] - 1  # number of (input, target) pairs
        if n < 1 or n > self.seq_len:
            raise DataError(f"chunk of {chunk.shape[0]} tokens cannot be packed into seq_len {self.seq_len}")
        fits = np.flatnonzero(self.seq_len - self._fill >= n)
        if fits.size == 0:
            return False
        row = int(fits[0])
        start = int(self._fill[row])
        sl = slice(start, start + n)
        self._inputs[row, sl] = chunk[:-1]
        self._targets[row, sl] = chunk[1:]
        self._positions[row, sl] = np.arange(n, dtype=np.int32)
        self._num_segments[row] += 1
        self._segment_ids[row, sl] = self._num_segments[row]
        self._fill[row] += n
        return True

    def flush(self) -> dict[str, np.ndarray]:
        """Returns the round as a batch dict of ``[num_rows, seq_len]`` and resets."""
        real = self._segment_ids > 0
        batch = {
            "inputs": self._inputs,
            "targets": self._targets,
            "positions": self._positions,
            "segment_ids": self._segment_ids,
            "weights": real.astype(np.float32),
            "num_bytes": np.where(real, self.token_num_bytes[self._targets], 0).astype(np.int32),
        }
        self._reset()
        return batch


def pack_chunks(
    chunks: Iterable[np.ndarray],
    *,
    seq_len: int,
    batch_size: int,
    token_num_bytes: np.ndarray,
) -> Iterator[dict[str, np.ndarray]]:
    """Packs chunks (each int [m], 2 <= m <= seq_len + 1) first-fit, in order, into batches.

    Yields dicts of ``[batch_size, seq_len]`` arrays (see module docstring);
    the last batch is padded with zeros (weight 0).
    """
    packer = RoundPacker(batch_size, seq_len, token_num_bytes)
    for chunk in chunks:
        if not packer.add(chunk):
            yield packer.flush()
            packer.add(chunk)
    if not packer.is_empty:
        yield packer.flush()


def pack_documents(
    documents: Iterable[np.ndarray],
    *,
    seq_len: int,
    batch_size: int,
    bos_id: int,
    token_num_bytes: np.ndarray,
) -> Iterator[dict[str, np.ndarray]]:
    """Packs tokenized documents (no BOS; each int [n]), in order, into batches.

    The reference composition of BOS + :class:`ChunkIndex` + :func:`pack_chunks`
    over documents held in memory. Token ids are validated against
    ``len(token_num_bytes)`` (the vocab size).
    """
    docs = [np.asarray(d) for d in documents]
    for d in docs:
        validate_token_ids(d, len(token_num_bytes))
    doc_starts = np.concatenate([[0], np.cumsum([d.shape[0] + 1 for d in docs], dtype=np.int64)])
    tokens = np.full(int(doc_starts[-1]), bos_id, np.int32)  # [N]: BOS + doc, back to back
    for d, start in zip(docs, doc_starts[:-1]):
        tokens[start + 1 : start + 1 + d.shape[0]] = d
    index = ChunkIndex.build(doc_starts, seq_len)
    chunks = (tokens[s : s + n] for s, n in zip(index.start.tolist(), index.length.tolist()))
    return pack_chunks(chunks, seq_len=seq_len, batch_size=batch_size, token_num_bytes=token_num_bytes)


def random_batch(batch_size: int, seq_len: int, vocab_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch in the pipeline's format of uniform random ids in [2, vocab_size) (no pad/BOS), one
    unpacked sequence per row, every target weighted and counted as one byte. For benchmarks and
    tests that need the trainer's input without a corpus."""
    toks = (
        np.random.default_rng(seed).integers(2, vocab_size, size=(batch_size, seq_len + 1)).astype(np.int32)
    )
    ones = np.ones((batch_size, seq_len), np.int32)
    return {
        "inputs": toks[:, :-1],
        "targets": toks[:, 1:],
        "positions": np.tile(np.arange(seq_len, dtype=np.int32), (batch_size, 1)),
        "segment_ids": ones,
        "weights": ones.astype(np.float32),
        "num_bytes": ones,
    }
