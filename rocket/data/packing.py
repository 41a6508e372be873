"""Pure-numpy packing of tokenized documents into fixed-shape training batches.

Each document is prefixed with BOS and cut into *chunks* of at most
``seq_len + 1`` tokens that overlap by one token, so every token except the
leading BOS is a prediction target exactly once::

    doc (with BOS):  B t1 t2 t3 t4 t5 t6 t7       seq_len = 4
    chunks:          [B t1 t2 t3 t4] [t4 t5 t6 t7]
    inputs/targets:  chunk[:-1] / chunk[1:]

Chunks are packed first-fit into a *round* of ``batch_size`` rows of length
``seq_len``. A round is closed (emitted as one batch) as soon as a chunk fits in
none of its rows; that chunk opens the next round. Because a batch boundary is
always "between two chunks", the position in the document stream
``(document, chunk index)`` is a complete, tiny checkpoint state.

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


def with_bos(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """Returns int32 ``[n + 1]``: BOS followed by ``tokens`` [n]."""
    out = np.empty(tokens.shape[0] + 1, np.int32)
    out[0] = bos_id
    out[1:] = tokens
    return out


def num_chunks(num_tokens: int, seq_len: int) -> int:
    """Number of chunks for a document of ``num_tokens`` tokens (BOS included)."""
    return max(0, -(-(num_tokens - 1) // seq_len))


def get_chunk(tokens: np.ndarray, index: int, seq_len: int) -> np.ndarray:
    """Chunk ``index`` of ``tokens`` [n]: ``tokens[i*L : i*L + L + 1]`` (L=seq_len)."""
    start = index * seq_len
    return tokens[start : start + seq_len + 1]


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


def pack_documents(
    documents: Iterable[np.ndarray],
    *,
    seq_len: int,
    batch_size: int,
    bos_id: int,
    token_num_bytes: np.ndarray,
) -> Iterator[dict[str, np.ndarray]]:
    """Packs tokenized documents (no BOS; each int [n]) into batches.

    Yields dicts of ``[batch_size, seq_len]`` arrays (see module docstring);
    the last batch is padded with zeros (weight 0). Token ids are validated
    against ``len(token_num_bytes)`` (the vocab size).
    """
    vocab_size = len(token_num_bytes)
    packer = RoundPacker(batch_size, seq_len, token_num_bytes)
    for doc in documents:
        doc = np.asarray(doc)
        validate_token_ids(doc, vocab_size)
        tokens = with_bos(doc, bos_id)
        for c in range(num_chunks(tokens.shape[0], seq_len)):
            chunk = get_chunk(tokens, c, seq_len)
            if not packer.add(chunk):
                yield packer.flush()
                packer.add(chunk)
    if not packer.is_empty:
        yield packer.flush()
