"""Tokenizers: exact byte-level and a locally trained SentencePiece BPE.

Both satisfy the :class:`Tokenizer` protocol. ``token_num_bytes[i]`` is the
number of UTF-8 bytes token ``i`` stands for (0 for pad/BOS/specials), so the
sum over a document's tokens equals its byte length and bits-per-byte is exact.
"""

from __future__ import annotations

import io
import logging
import os
import pathlib
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rocket.data.packing import DataError

_log = logging.getLogger(__name__)

# Bump when the SentencePiece training recipe changes (invalidates caches).
SPM_RECIPE = "bpe1"
_SPACE_PIECE = "\u2581"  # '▁', SentencePiece's whitespace symbol.


def default_cache_dir() -> pathlib.Path:
    """Rocket cache root: ``$ROCKET_CACHE_DIR`` or ``~/.cache/rocket``."""
    env = os.environ.get("ROCKET_CACHE_DIR")
    return pathlib.Path(env).expanduser() if env else (pathlib.Path.home() / ".cache" / "rocket")


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipeline and the model need from a tokenizer."""

    name: str
    vocab_size: int
    pad_id: int
    bos_id: int
    token_num_bytes: np.ndarray  # [vocab_size] int32

    def encode(self, text: str | bytes) -> np.ndarray:
        """Token ids int32 [n], no BOS added."""

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text for ``ids`` (specials dropped; invalid UTF-8 replaced)."""

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """Exact bytes for ``ids`` (specials dropped)."""


class ByteTokenizer:
    """pad=0, bos=1, byte b -> id b + 2; vocab 258. Exact on arbitrary bytes."""

    name = "byte"
    vocab_size = 258
    pad_id = 0
    bos_id = 1
    offset = 2

    def __init__(self) -> None:
        nb = np.ones(self.vocab_size, np.int32)
        nb[: self.offset] = 0
        self.token_num_bytes = nb  # [258]

    def encode(self, text: str | bytes) -> np.ndarray:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return np.frombuffer(data, np.uint8).astype(np.int32) + self.offset

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        ids = np.asarray(ids, np.int64).reshape(-1)
        ids = ids[(ids >= self.offset) & (ids < self.vocab_size)]
        return (ids - self.offset).astype(np.uint8).tobytes()

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=258)"


def _piece_bytes(sp: Any, i: int) -> bytes:
    """UTF-8 bytes that SentencePiece id ``i`` decodes to (b'' for specials)."""
    if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
        return b""
    piece = sp.id_to_piece(i)
    if sp.is_byte(i):  # '<0xNN>'
        return bytes([int(piece[3:5], 16)])
    return piece.replace(_SPACE_PIECE, " ").encode("utf-8")


class SentencePieceTokenizer:
    """SentencePiece BPE with byte fallback; ``decode(encode(t)) == t`` exactly.

    Ids: pad=0, bos=1, eos=2, unk=3, then 256 byte-fallback pieces, then merges.
    """

    name = "sentencepiece"
    pad_id = 0
    bos_id = 1

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm  # local: keep `import rocket.data` light

        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = int(self._sp.get_piece_size())
        if self._sp.pad_id() != 0 or self._sp.bos_id() != 1:
            raise DataError("SentencePiece model must have pad_id=0, bos_id=1")
        self._id_bytes = [_piece_bytes(self._sp, i) for i in range(self.vocab_size)]
        self.token_num_bytes = np.array([len(b) for b in self._id_bytes], np.int32)  # [vocab]
        # A literal '▁' in the text would decode as ' '; encode it as bytes.
        self._literal_space_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_PIECE.encode()]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SentencePieceTokenizer:
        return cls(pathlib.Path(path).read_bytes())

    def encode(self, text: str | bytes) -> np.ndarray:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        parts = text.split(_SPACE_PIECE)
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k:
                ids.extend(self._literal_space_ids)
            if part:
                ids.extend(self._sp.encode(part, out_type=int))
        return np.asarray(ids, np.int32)

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        table, n = self._id_bytes, self.vocab_size
        return b"".join(table[i] for i in np.asarray(ids).reshape(-1).tolist() if 0 <= i < n)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"


def _training_sentences(
    texts: Iterable[str | bytes], max_chars: int, max_sentence_chars: int
) -> Iterator[str]:
    """Cuts documents into line-aligned pieces of <= max_sentence_chars.

    Pieces keep their newlines, so merges like ``'):\\n'`` can be learned.
    Stops after ``max_chars`` characters in total.
    """
    total = 0
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        buf = ""
        for line in text.splitlines(keepends=True):
            while len(line) > max_sentence_chars:  # very long line: hard split
                yield line[:max_sentence_chars]
                total += max_sentence_chars
                line = line[max_sentence_chars:]
            if buf and len(buf) + len(line) > max_sentence_chars:
                yield buf
                total += len(buf)
                buf = ""
            buf += line
            if total >= max_chars:
                return
        if buf:
            yield buf
            total += len(buf)
        if total >= max_chars:
            return


def train_sentencepiece(
    texts: Iterable[str | bytes],
    *,
    vocab_size: int,
    max_chars: int = 12_000_000,
    num_threads: int | None = None,
) -> bytes:
    """Trains a byte-fallback BPE model on ``texts``; returns the model proto.

    ``vocab_size`` is a soft limit (tiny corpora may yield fewer pieces); it
    must leave room for 4 specials + 256 byte pieces.
    """
    import sentencepiece as spm

    if vocab_size < 4 + 256 + 8:
        raise DataError(
            f"SentencePiece vocab_size {vocab_size} too small; "
            "need >= 268 (4 specials + 256 byte pieces + merges)"
        )
    sentences = _training_sentences(texts, max_chars, 2000)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=proto,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        split_by_whitespace=False,
        allow_whitespace_only_pieces=True,
        split_digits=False,
        max_sentencepiece_length=16,
        max_sentence_length=8192,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        input_sentence_size=0,
        num_threads=num_threads or os.cpu_count() or 1,
        minloglevel=2,
    )
    return proto.getvalue()


def _sample_documents(source: Any, seed: int = 0) -> Iterator[bytes]:
    """Documents of a random-access text ``source`` in a fixed random order."""
    order = np.random.default_rng(seed).permutation(len(source))
    for i in order:
        yield source[int(i)]


def load_or_train_sentencepiece(
    train_source: Any,
    *,
    corpus_id: str,
    vocab_size: int,
    cache_dir: str | os.PathLike[str] | None = None,
    max_chars: int = 12_000_000,
) -> SentencePieceTokenizer:
    """Loads the cached model for (corpus_id, vocab_size) or trains and caches it."""
    root = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    path = root / "spm" / f"{corpus_id}-v{vocab_size}-{SPM_RECIPE}.model"
    if path.exists():
        return SentencePieceTokenizer.load(path)
    if train_source is None or len(train_source) == 0:
        raise DataError("SentencePiece training needs a non-empty training split")
    t0 = time.perf_counter()
    proto = train_sentencepiece(_sample_documents(train_source), vocab_size=vocab_size, max_chars=max_chars)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(proto)
    os.replace(tmp, path)  # atomic: concurrent hosts never see a partial file
    _log.info("trained SentencePiece vocab %d in %.1fs -> %s", vocab_size, time.perf_counter() - t0, path)
    return SentencePieceTokenizer(proto)


def get_tokenizer(
    name: str,
    *,
    corpus: Any = None,
    corpus_id: str | None = None,
    vocab_size: int = 4096,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Tokenizer:
    """Returns a tokenizer by name: ``"byte"`` or ``"sentencepiece"``.

    For ``"sentencepiece"``, ``corpus`` is the mapping returned by
    ``prepare_corpus`` (its ``"train"`` split is the training text and its
    ``corpus_id`` the cache key unless ``corpus_id`` is given).
    """
    if name == "byte":
        return ByteTokenizer()
    if name in ("sentencepiece", "spm"):
        if corpus is None:
            raise DataError("the sentencepiece tokenizer needs a corpus to train on")
        cid = corpus_id or getattr(corpus, "corpus_id", None)
        if not cid:
            raise DataError("sentencepiece tokenizer needs a corpus_id cache key")
        return load_or_train_sentencepiece(
            corpus["train"], corpus_id=cid, vocab_size=vocab_size, cache_dir=cache_dir
        )
    raise DataError(f"unknown tokenizer {name!r}; use 'byte' or 'sentencepiece'")
