"""Train stream of a streamed corpus: records -> tokens -> window-shuffled chunks -> packed batches.

::

    HFStream.open(split)                          # datasets.IterableDataset, nothing read ahead
      split_dataset_by_node(rank, world_size)     # this host's records (disjoint, complete)
    -> minus the held-out (validation) texts
    -> windows of `window` documents: tokenized (BOS + ids), cut into `seq_len + 1`-token chunks
       (ChunkIndex, as for cached corpora), the window's chunks permuted with rng([seed, w])
    -> PackedBatchIterDataset                     # first-fit pack, exact bits/byte (packing.py)

At the end of the stream the next epoch starts (``set_epoch``). The state is the stream position
at the start of the current window (``IterableDataset.state_dict()``), the epoch, the window
number and the chunks of the window already read: restoring re-reads and re-tokenizes that one
window, so a restored iterator yields bitwise the same batches, with no full pass over the data.
"""

from __future__ import annotations

import logging
from typing import Any

import grain
import numpy as np

from rocket.data.packing import ChunkIndex, DataError
from rocket.data.sources.hf import HFStream, SkipCounts, record_text
from rocket.data.tokenizers import Tokenizer
from rocket.data.tokens import tokenize_split

_log = logging.getLogger(__name__)

_MOVED = object()  # the stream moved since its state was last known: ask datasets


def shard_stream(ds: Any, shard_index: int, shard_count: int) -> Any:
    """Records of host ``shard_index`` of ``shard_count``: whole files when they divide evenly
    (``n_shards % shard_count == 0``), else every ``shard_count``-th record."""
    if shard_count == 1:
        return ds
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(ds, rank=shard_index, world_size=shard_count)


class _StreamChunkIterator(grain.DatasetIterator):
    """Token chunks int32 [m] of a record stream, window-shuffled; exact ``get_state``/``set_state``."""

    def __init__(self, stream: HFStream, tokenizer: Tokenizer, *, seq_len: int, seed: int, window: int,
                 shard_index: int, shard_count: int, held_out: frozenset[bytes]) -> None:  # fmt: skip
        super().__init__()
        self._held_out = held_out
        self._stream, self._tokenizer = stream, tokenizer
        self._kw = dict(seq_len=seq_len, seed=seed, window=window)
        self._shard = (shard_index, shard_count)
        self.skipped = SkipCounts()
        self._window_state: dict[str, Any] = {"epoch": 0, "window": 0, "hf": None}
        self._next_number = 0  # the number of the next window (its shuffle seed)
        self._chunks: list[np.ndarray] = []
        self._pos = 0
        self._reset(0, None)

    def _reset(self, epoch: int, hf_state: dict | None) -> None:
        self._ds = shard_stream(self._stream.open(self._stream.split), *self._shard)
        self._ds.set_epoch(epoch)
        if hf_state is not None:
            self._ds.load_state_dict(hf_state)
        self._records, self._epoch, self._hf = iter(self._ds), epoch, hf_state

    def _read_window(self) -> list[bytes]:
        docs: list[bytes] = []
        empty_epochs = 0
        while len(docs) < self._kw["window"]:
            try:
                record = next(self._records)
            except StopIteration:
                empty_epochs = 0 if docs else empty_epochs + 1
                if empty_epochs > 1:
                    raise DataError(
                        f"corpus {self._stream.spec!r}: this host's stream has no training text (every "
                        "record is empty, lacks the text field or is one of the data.val_docs="
                        f"{self._stream.val_docs} held out for validation)"
                    ) from None
                self._reset(self._epoch + 1, None)
                if docs:
                    break  # a window never spans two epochs
                continue
            self._hf = _MOVED
            text = record_text(record, self._stream.text_field, self.skipped)
            if text is None:
                n = self.skipped.total()
                if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: one line, rarely
                    _log.warning(
                        "corpus %r: skipped %d streamed record(s) so far: %d without the field %r, %d empty",
                        self._stream.spec,
                        n,
                        self.skipped.missing,
                        self._stream.text_field,
                        self.skipped.empty,
                    )
                continue
            if text not in self._held_out:
                docs.append(text)
        return docs

    def _next_window(self) -> None:
        hf = self._ds.state_dict() if self._hf is _MOVED else self._hf
        number, self._next_number = self._next_number, self._next_number + 1
        self._window_state = {"epoch": self._epoch, "window": number, "hf": hf}
        split = tokenize_split(self._read_window(), self._tokenizer, num_threads=1)
        index = ChunkIndex.build(split.doc_starts, self._kw["seq_len"])
        order = np.random.default_rng([self._kw["seed"], number]).permutation(len(index))
        self._chunks = [
            np.array(split.tokens[s : s + n], np.int32)
            for s, n in zip(index.start[order].tolist(), index.length[order].tolist())
        ]
        self._pos = 0

    def __next__(self) -> np.ndarray:
        while self._pos >= len(self._chunks):
            self._next_window()
        self._pos += 1
        return self._chunks[self._pos - 1]

    def get_state(self) -> dict[str, Any]:
        return {**self._window_state, "pos": self._pos}

    def set_state(self, state: dict[str, Any]) -> None:
        """Re-reads window ``state["window"]`` from its start position and skips ``pos`` chunks."""
        self._reset(state["epoch"], state["hf"])
        self._next_number = state["window"]
        self._next_window()
        self._pos = state["pos"]


class StreamChunks(grain.IterDataset):
    """grain IterDataset of the token chunks of a streamed corpus (see the module docstring)."""

    def __init__(self, stream: HFStream, tokenizer: Tokenizer, **kw: Any) -> None:
        super().__init__()
        self._args = (stream, tokenizer)
        self._kw = kw

    def __iter__(self) -> _StreamChunkIterator:
        return _StreamChunkIterator(*self._args, **self._kw)

    def __str__(self) -> str:
        return f"StreamChunks({self._args[0].spec}, {self._kw})"
