"""Tokenizers: exact byte-level, a locally trained SentencePiece BPE, and a Hugging Face
``tokenizer.json`` (the ``tokenizers`` library: byte-level BPE or BPE with byte fallback).

All satisfy the :class:`Tokenizer` protocol. ``token_num_bytes[i]`` is the
number of UTF-8 bytes token ``i`` stands for (0 for pad/BOS/specials), so the
sum over a document's tokens equals its byte length and bits-per-byte is exact.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import re
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


_HF_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte -> the byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class HFTokenizer:
    """A ``tokenizer.json`` (Hugging Face ``tokenizers``); ``token_num_bytes`` from each token's bytes.

    A token's bytes: special tokens b""; ``<0xNN>`` byte-fallback pieces the byte NN; byte-level BPE
    pieces (GPT-2 / Llama 3 / Qwen / SmolLM) their characters mapped back through the byte-level
    alphabet; other pieces their UTF-8 with SentencePiece's "▁" read as a space. ``decode_bytes``
    concatenates them, so bits/byte is exact whenever ``encode`` adds nothing (true for byte-level
    BPE; a Metaspace tokenizer that prepends "▁" counts that space). ``bos_id`` / ``pad_id``: the
    ids given (from the model's config), else the tokenizer's ``<s>`` / BOS-like special, else 0.
    """

    name = "hf"

    def __init__(
        self, tokenizer_json: bytes, *, bos_id: int | None = None, eos_id: int | None = None
    ) -> None:
        from tokenizers import Tokenizer as _Tokenizer  # local: keep `import rocket.data` light

        self.model_proto = tokenizer_json  # hashed into token-cache keys (rocket.data.tokens)
        try:
            self._tok = _Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        except Exception as e:  # the library raises a bare Exception on malformed JSON
            raise DataError(f"tokenizer.json cannot be parsed: {str(e).splitlines()[0]}") from None
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        specials = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        byte_level = "ByteLevel" in json.dumps(json.loads(tokenizer_json).get("decoder"))
        alphabet = _byte_level_alphabet()
        self._id_bytes = []
        for i in range(self.vocab_size):
            piece = self._tok.id_to_token(i)
            if piece is None or piece in specials:
                self._id_bytes.append(b"")
            elif m := _HF_BYTE_PIECE.match(piece):
                self._id_bytes.append(bytes([int(m.group(1), 16)]))
            elif byte_level and all(c in alphabet for c in piece):
                self._id_bytes.append(bytes(alphabet[c] for c in piece))
            else:
                self._id_bytes.append(piece.replace(_SPACE_PIECE, " ").encode("utf-8"))
        self.token_num_bytes = np.array([len(b) for b in self._id_bytes], np.int32)  # [vocab]
        first_special = min((self._tok.token_to_id(t) for t in specials), default=0)
        self.bos_id = int(bos_id if bos_id is not None else first_special)
        self.eos_id = eos_id
        self.pad_id = self.bos_id

    @classmethod
    def load(cls, path: str | os.PathLike[str], **ids: int | None) -> HFTokenizer:
        """From a ``tokenizer.json`` file or a directory holding one."""
        path = pathlib.Path(path)
        path = path / "tokenizer.json" if path.is_dir() else path
        if not path.is_file():
            raise DataError(f"{path}: no such tokenizer file")
        return cls(path.read_bytes(), **ids)

    def encode(self, text: str | bytes) -> np.ndarray:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        table, n = self._id_bytes, self.vocab_size
        return b"".join(table[i] for i in np.asarray(ids).reshape(-1).tolist() if 0 <= i < n)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def piece(self, i: int) -> str:
        """The vocabulary entry of id ``i``."""
        return self._tok.id_to_token(i)

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size})"


def tokenizer_json(tokenizer: Tokenizer) -> bytes:
    """A ``tokenizer.json`` for ``tokenizer``: an `HFTokenizer`'s own, or for `ByteTokenizer` a
    byte-level BPE without merges whose ids are rocket's (pad 0, bos 1, byte b -> b + 2)."""
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.model_proto
    if not isinstance(tokenizer, ByteTokenizer):
        raise DataError(f"{tokenizer!r} cannot be written as a tokenizer.json (byte or hf tokenizers only)")
    from tokenizers import Tokenizer as _Tokenizer
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1} | {c: b + ByteTokenizer.offset for c, b in _byte_level_alphabet().items()}
    tok = _Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<pad>", "<s>"])
    return tok.to_str().encode("utf-8")


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
    """Returns a tokenizer by name: ``"byte"``, ``"sentencepiece"``, or ``"hf:PATH"`` (a
    ``tokenizer.json`` file or a directory holding one: `HFTokenizer`).

    For ``"sentencepiece"``, ``corpus`` is the mapping returned by
    ``prepare_corpus`` (its ``"train"`` split is the training text and its
    ``corpus_id`` the cache key unless ``corpus_id`` is given).
    """
    if name == "byte":
        return ByteTokenizer()
    if name.startswith("hf:"):
        return HFTokenizer.load(name[len("hf:") :])
    if name in ("sentencepiece", "spm"):
        if corpus is None:
            raise DataError("the sentencepiece tokenizer needs a corpus to train on")
        cid = corpus_id or getattr(corpus, "corpus_id", None)
        if not cid:
            raise DataError("sentencepiece tokenizer needs a corpus_id cache key")
        return load_or_train_sentencepiece(
            corpus["train"], corpus_id=cid, vocab_size=vocab_size, cache_dir=cache_dir
        )
    raise DataError(f"unknown tokenizer {name!r}; use 'byte', 'sentencepiece' or 'hf:PATH'")
