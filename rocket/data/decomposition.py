"""Dataset Decomposition: power-of-two length buckets, fixed tokens per step, short-to-long curriculum.

Pouransari et al., NeurIPS 2024, arXiv 2405.13226 (apple/ml-dataset-decomposition:
`scripts/make_dd_buckets.py`, `scripts/get_dd_params.py`).

1. `binary_decompose`: every document (BOS + tokens, n tokens, n - 1 targets) is cut, left to
   right, into chunks of 2**k + 1 tokens (2**k targets; consecutive chunks overlap by one token,
   as `rocket.data.packing`), k = floor(log2(remaining - 1)), i.e. the binary expansion of its
   length; while the remainder is longer (k > `max_log2`) the chunk's k is drawn from
   [min_log2, max_log2] with p_k ~ 2**(max_log2 - k), as the official `get_binary` (its
   `ps = 2**arange(...)` paired with the bucket sizes in descending order): p_k * 2**k is the same
   for every k, so the random chunks put equal token mass into every bucket. A tail with fewer
   than 2**min_log2 targets is dropped. Chunk 2**k goes to bucket D_k, so no sequence mixes
   documents.
2. One step = one bucket i: `batch_size * 2**(max_log2 - i)` rows of 2**i tokens, i.e. always
   `batch_size * 2**max_log2` target tokens per step (no padding), packed with
   `rocket.data.packing.RoundPacker` (segment id 1, positions from 0).
3. Curriculum: an epoch is split into `cycles` cycles, each covering 1/cycles of every bucket's
   (shuffled) chunks; within a cycle each step picks bucket i with odds w_i * (remaining tokens of
   bucket i), as the official `get_dd_params.py` (mix weights = bucket tokens x curriculum), with
   w_i = 2**(max_log2 - i) ("grow_p2": short to long) or 1 ("uniform": a random order of all
   batches, no trend). Partial batches at the end of a cycle are dropped.

The schedule of an epoch is a pure function of (seed, epoch), so the iterator state is just
`{"meta", "epoch", "index"}` (JSON, exact resume). Every host computes the same schedule (shapes
agree across hosts) and takes rows `shard_index::shard_count` of each global batch. Each bucket is
a new batch shape: expect one compilation per bucket.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rocket.config.data import DD_CURRICULA
from rocket.data.packing import DataError, RoundPacker
from rocket.data.tokens import TokenizedSplit

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DecompositionSpec:
    """`build_data(..., decomposition=...)`: buckets 2**min_log2 .. seq_len (see module doc)."""

    min_log2: int = 5
    curriculum: str = "grow_p2"
    cycles: int = 1


def binary_decompose(
    doc_starts: np.ndarray, *, min_log2: int, max_log2: int, rng: np.random.Generator
) -> dict[int, np.ndarray]:
    """Chunk start offsets per bucket: {k: int64 [n_k]}, chunk = tokens[start : start + 2**k + 1]."""
    if not 0 <= min_log2 <= max_log2:
        raise DataError(f"need 0 <= min_log2 <= max_log2, got {min_log2}, {max_log2}")
    ks = np.arange(min_log2, max_log2 + 1)
    p_k = 2.0 ** (max_log2 - ks) / np.sum(2.0 ** (max_log2 - ks))  # equal token mass per bucket
    too_long = 2 ** (max_log2 + 1)  # floor(log2(remaining)) > max_log2: draw k at random
    out: dict[int, list[np.ndarray]] = {int(k): [] for k in ks}
    for start, end in zip(np.asarray(doc_starts[:-1]).tolist(), np.asarray(doc_starts[1:]).tolist()):
        offset, left = start, end - start - 1  # left = targets not yet in a chunk
        if left >= too_long:  # random chunks while the remainder is too long, drawn in one go
            draws = rng.choice(ks, size=(left - too_long) // 2**min_log2 + 1, p=p_k)
            ends = np.cumsum(2**draws)
            n = int(np.sum(left - (ends - 2**draws) >= too_long))  # remainder before chunk i is long
            for k in ks:
                out[int(k)].append(offset + (ends - 2**draws)[:n][draws[:n] == k])
            offset, left = offset + int(ends[n - 1]), left - int(ends[n - 1])
        for k in range(max_log2, min_log2 - 1, -1):  # then the binary expansion of the rest
            if left >> k & 1:
                out[k].append(np.array([offset], np.int64))
                offset += 2**k
        # the tail, left mod 2**min_log2 targets, is dropped
    return {k: np.concatenate(v).astype(np.int64) if v else np.zeros(0, np.int64) for k, v in out.items()}


def curriculum_schedule(
    counts: dict[int, int],
    rows: dict[int, int],
    *,
    curriculum: str,
    cycles: int,
    max_log2: int,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """One epoch's steps as (bucket k, first chunk index in bucket k's permutation)."""
    if curriculum not in DD_CURRICULA:
        raise DataError(f"unknown curriculum {curriculum!r}; valid: {DD_CURRICULA}")
    ks = sorted(counts)
    weight = np.array([2.0 ** (max_log2 - k) if curriculum == "grow_p2" else 1.0 for k in ks])
    steps: list[tuple[int, int]] = []
    for c in range(cycles):
        first = [counts[k] * c // cycles for k in ks]  # this cycle's slice of each permutation
        left = np.array([(counts[k] * (c + 1) // cycles - f) // rows[k] for k, f in zip(ks, first)])
        used = np.zeros(len(ks), np.int64)
        while left.sum() > 0:
            odds = weight * left  # w_k * remaining batches (= remaining tokens / tokens per step)
            j = int(rng.choice(len(ks), p=odds / odds.sum()))
            steps.append((ks[j], first[j] + int(used[j]) * rows[ks[j]]))
            used[j] += 1
            left[j] -= 1
    return steps


class DecompositionIterator:
    """Infinite iterator of Dataset Decomposition batches with JSON-serialisable state."""

    def __init__(
        self,
        split: TokenizedSplit,
        token_num_bytes: np.ndarray,
        *,
        max_log2: int,
        min_log2: int,
        batch_size: int,
        seed: int,
        curriculum: str = "grow_p2",
        cycles: int = 1,
        shard_index: int = 0,
        shard_count: int = 1,
    ) -> None:
        if batch_size < 1 or cycles < 1 or not 0 <= shard_index < shard_count:
            raise DataError(
                f"bad batch_size {batch_size}, cycles {cycles} or shard {shard_index}/{shard_count}"
            )
        self.tokens = split.tokens
        self.token_num_bytes = np.asarray(token_num_bytes, np.int32)
        self.max_log2, self.batch_size, self.seed = max_log2, batch_size, seed
        self.curriculum, self.cycles = curriculum, cycles
        self.shard_index, self.shard_count = shard_index, shard_count
        self.buckets = binary_decompose(
            split.doc_starts, min_log2=min_log2, max_log2=max_log2, rng=np.random.default_rng([seed, 0])
        )
        # global rows of bucket k: all hosts' rows at the longest bucket, times 2**(max - k)
        self.rows = {k: batch_size * shard_count * 2 ** (max_log2 - k) for k in self.buckets}
        self.meta = {
            "kind": "dataset_decomposition",
            "seed": seed,
            "min_log2": min_log2,
            "max_log2": max_log2,
            "batch_size": batch_size,
            "curriculum": curriculum,
            "cycles": cycles,
            "shard_index": shard_index,
            "shard_count": shard_count,
            "num_docs": split.num_docs,
            "chunks": {str(k): int(v.shape[0]) for k, v in self.buckets.items()},
        }
        self._epoch, self._index = 0, 0
        self._load_epoch(0)
        if not self._schedule:
            raise DataError(
                f"no bucket holds a full batch ({batch_size * shard_count} rows at 2**{max_log2} tokens): "
                f"chunks per bucket {self.meta['chunks']}; use a smaller batch or more data"
            )

    def _load_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, 1, epoch])
        self._perm = {k: rng.permutation(v.shape[0]) for k, v in self.buckets.items()}
        counts = {k: int(v.shape[0]) for k, v in self.buckets.items()}
        self._schedule = curriculum_schedule(
            counts, self.rows, curriculum=self.curriculum, cycles=self.cycles, max_log2=self.max_log2, rng=rng
        )
        self._epoch = epoch

    def __iter__(self) -> DecompositionIterator:
        return self

    def __next__(self) -> Batch:
        if self._index >= len(self._schedule):
            self._load_epoch(self._epoch + 1)
            self._index = 0
        k, first = self._schedule[self._index]
        self._index += 1
        chunk_ids = self._perm[k][first : first + self.rows[k]][self.shard_index :: self.shard_count]
        packer = RoundPacker(len(chunk_ids), 2**k, self.token_num_bytes)
        for start in self.buckets[k][chunk_ids].tolist():
            if not packer.add(np.asarray(self.tokens[start : start + 2**k + 1], np.int32)):
                raise AssertionError("a bucket chunk must fill exactly one row")
        return packer.flush()

    @property
    def tokens_per_step(self) -> int:
        """Target tokens in every batch of this process."""
        return self.batch_size * 2**self.max_log2

    def get_state(self) -> dict[str, Any]:
        return {"meta": dict(self.meta), "epoch": self._epoch, "index": self._index}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("meta") != self.meta:
            raise DataError(
                f"data iterator state was saved for {state.get('meta')}, but this iterator is {self.meta}"
            )
        if state["epoch"] != self._epoch:
            self._load_epoch(int(state["epoch"]))
        self._index = int(state["index"])
