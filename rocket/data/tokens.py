"""Token cache: a split tokenized once into one flat token array plus document offsets.

A :class:`TokenizedSplit` holds::

    tokens:     [N]      uint16 if vocab_size <= 65535 else int32; per document BOS + its tokens
    doc_starts: [D + 1]  int64; document d (BOS included) is tokens[doc_starts[d]:doc_starts[d + 1]]

``tokenize_split(source, tokenizer, key=...)`` caches it as ``tokens.npy`` and
``doc_starts.npy`` in ``<cache_dir>/tokens/<key>-<tokenizer id>/``: the folder
is written under a temporary name and renamed into place (atomic; concurrent
hosts never see a partial cache), and ``tokens.npy`` is opened with
``np.load(mmap_mode="r")``. Token ids are validated against the vocab once, when
the cache is built.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import logging
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np

from rocket.data.packing import DataError, validate_token_ids
from rocket.data.tokenizers import Tokenizer, default_cache_dir

_log = logging.getLogger(__name__)

CACHE_VERSION = "t1"  # bump when the cache layout or the BOS/token convention changes


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
    """A tokenized split: flat ``tokens`` [N] and ``doc_starts`` [D + 1] (see module doc)."""

    tokens: np.ndarray  # [N] uint16 | int32 (maybe a read-only memmap)
    doc_starts: np.ndarray  # [D + 1] int64, doc_starts[0] == 0, doc_starts[-1] == N
    vocab_size: int

    @property
    def num_docs(self) -> int:
        return int(self.doc_starts.shape[0] - 1)

    @property
    def num_targets(self) -> int:
        """Tokens that are prediction targets (all but the BOS of each document)."""
        return int(self.tokens.shape[0]) - self.num_docs

    def doc(self, index: int) -> np.ndarray:
        """Document ``index`` as stored: BOS + tokens, ``[n]``."""
        return self.tokens[self.doc_starts[index] : self.doc_starts[index + 1]]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id of ``vocab_size`` fits, else int32."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.int32)


def tokenizer_id(tokenizer: Tokenizer) -> str:
    """Cache identity of a tokenizer: name + vocab size (+ hash of a SentencePiece model proto)."""
    tid = f"{tokenizer.name}{int(tokenizer.vocab_size)}"
    proto = getattr(tokenizer, "model_proto", None)
    if proto is not None:
        tid += "-" + hashlib.sha1(proto).hexdigest()[:12]
    return tid


def _encoded(source: Any, tokenizer: Tokenizer, num_threads: int) -> Iterator[np.ndarray]:
    """``tokenizer.encode(source[i])`` for i = 0, 1, ... in order, encoded by a thread pool."""

    def encode(i: int) -> np.ndarray:
        return tokenizer.encode(source[i])

    window = 64 * num_threads  # bounded read-ahead: memory stays O(window) documents
    with ThreadPoolExecutor(num_threads, thread_name_prefix="rocket-tokenize") as pool:
        pending: collections.deque = collections.deque()
        for i in range(len(source)):
            pending.append(pool.submit(encode, i))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _write_tokens(source: Any, tokenizer: Tokenizer, sink: BinaryIO, num_threads: int) -> np.ndarray:
    """Streams BOS + ids of every document of ``source`` to ``sink``; returns doc_starts [D + 1]."""
    vocab, dtype = int(tokenizer.vocab_size), token_dtype(int(tokenizer.vocab_size))
    starts = [0]
    for ids in _encoded(source, tokenizer, num_threads):
        validate_token_ids(ids, vocab)
        doc = np.empty(ids.shape[0] + 1, dtype)
        doc[0] = tokenizer.bos_id
        doc[1:] = ids
        sink.write(doc.tobytes())
        starts.append(starts[-1] + doc.shape[0])
    return np.asarray(starts, np.int64)


def _build_in_memory(source: Any, tokenizer: Tokenizer, num_threads: int) -> TokenizedSplit:
    buf = io.BytesIO()
    doc_starts = _write_tokens(source, tokenizer, buf, num_threads)
    tokens = np.frombuffer(buf.getvalue(), token_dtype(int(tokenizer.vocab_size)))
    return TokenizedSplit(tokens, doc_starts, int(tokenizer.vocab_size))


def _build_on_disk(source: Any, tokenizer: Tokenizer, path: pathlib.Path, num_threads: int) -> None:
    """Writes ``path/{tokens,doc_starts}.npy`` via a temporary folder renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would hide a shared cache from other users
    try:
        with open(tmp / "tokens.raw", "wb") as raw:
            doc_starts = _write_tokens(source, tokenizer, raw, num_threads)
        dtype, n = token_dtype(int(tokenizer.vocab_size)), int(doc_starts[-1])
        out = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=dtype, shape=(n,))
        out[:] = np.memmap(tmp / "tokens.raw", dtype=dtype, mode="r", shape=(n,))
        out.flush()
        del out
        os.remove(tmp / "tokens.raw")
        np.save(tmp / "doc_starts.npy", doc_starts)
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished first: keep its (identical) cache
            if not (path / "doc_starts.npy").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize_split(
    source: Any,
    tokenizer: Tokenizer,
    *,
    key: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
) -> TokenizedSplit:
    """Tokenizes every document of ``source`` (``len``, ``src[i] -> bytes``) in order.

    With ``key`` (e.g. ``f"{corpus_id}-train"``; must identify the split's
    content) the result is cached on disk (see module doc) and a later call
    loads it without tokenizing; without ``key`` it is built in memory only.
    Raises DataError for an empty source or token ids outside the vocab.
    """
    if len(source) == 0:
        raise DataError("cannot tokenize a split with no documents")
    threads = num_threads or os.cpu_count() or 1
    if key is None:
        return _build_in_memory(source, tokenizer, threads)
    root = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = root / "tokens" / f"{key}-{tokenizer_id(tokenizer)}-{CACHE_VERSION}"
    if not (path / "doc_starts.npy").exists():
        t0 = time.perf_counter()
        _build_on_disk(source, tokenizer, path, threads)
        _log.info("tokenized %d documents in %.1fs -> %s", len(source), time.perf_counter() - t0, path)
    doc_starts = np.load(path / "doc_starts.npy")
    tokens = np.load(path / "tokens.npy", mmap_mode="r")
    if doc_starts.shape[0] != len(source) + 1 or tokens.shape[0] != doc_starts[-1]:
        raise DataError(f"token cache {path} does not match its split ({len(source)} docs); delete it")
    return TokenizedSplit(tokens, doc_starts, int(tokenizer.vocab_size))
