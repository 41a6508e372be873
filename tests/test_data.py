"""Tests for rocket.data: tokenizers, local text corpora, packing, grain pipeline.

Never touches the network; corpora are tiny tmp folders (one test uses stdlib).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import rocket.data as rd
from rocket.data.packing import BATCH_KEYS
from rocket.data.sources import files as corpus_mod

TRICKY_TEXTS = [
    "",
    "def f(x):\n\tif x:\n        return  x\n\n\n",
    "   leading and trailing   \n",
    "tabs\t\tand\r\nCRLF\r\n\x0b\x0c",
    "unicode: héllo wörld 日本語 😀 \u2581 literal spm space \u2581\u2581",
    "a" * 50 + " " * 17 + "\n" * 5,
]


def _write_corpus(root: pathlib.Path, n_files: int = 24, seed: int = 0) -> pathlib.Path:
    """A small code-like corpus: files with unique first lines, varied sizes."""
    rng = np.random.default_rng(seed)
    words = "def return self import x value for in if else: ( ) über 日本 print".split() + ["    ", "\t"]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        lines = [f"# file {i:03d}\n"]
        for _ in range(int(rng.integers(1, 30))):
            k = int(rng.integers(1, 10))
            lines.append(" " * int(rng.integers(0, 9)) + " ".join(rng.choice(words, k)) + "\n")
        sub = root / ("pkg" if i % 3 == 0 else "") / f"m{i:03d}.py"
        sub.parent.mkdir(parents=True, exist_ok=True)
        sub.write_text("".join(lines), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("rocket_cache")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, cache_dir) -> rd.Corpus:
    root = _write_corpus(tmp_path_factory.mktemp("corpus") / "src")
    return rd.prepare_corpus(str(root), val_fraction=0.25, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def spm_tok(small_corpus, cache_dir) -> rd.SentencePieceTokenizer:
    return rd.get_tokenizer("sentencepiece", corpus=small_corpus, vocab_size=400, cache_dir=cache_dir)


# ----------------------------------------------------------------- tokenizers
def test_byte_tokenizer_roundtrips_random_bytes():
    tok = rd.ByteTokenizer()
    rng = np.random.default_rng(0)
    for n in [0, 1, 7, 1000]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        ids = tok.encode(data)
        assert ids.dtype == np.int32 and ids.shape == (n,)
        assert ((ids >= 2) & (ids < tok.vocab_size)).all()
        assert tok.decode_bytes(ids) == data
        assert tok.token_num_bytes[ids].sum() == n
    assert tok.decode(tok.encode("héllo 😀")) == "héllo 😀"
    assert tok.decode_bytes([tok.bos_id, 2 + 65, tok.pad_id]) == b"A"


def test_sentencepiece_roundtrip_and_num_bytes(spm_tok, small_corpus, cache_dir):
    assert 268 <= spm_tok.vocab_size <= 400
    assert (spm_tok.pad_id, spm_tok.bos_id) == (0, 1)
    assert spm_tok.token_num_bytes[:4].tolist() == [0, 0, 0, 0]
    for text in TRICKY_TEXTS + [small_corpus["validation"][0].decode()]:
        ids = spm_tok.encode(text)
        assert ids.dtype == np.int32
        assert spm_tok.decode(ids) == text, repr(text)
        assert spm_tok.decode_bytes(ids) == text.encode()
        assert int(spm_tok.token_num_bytes[ids].sum()) == len(text.encode())
    # Merges are learned (compresses the training text), not bytes only.
    doc = small_corpus["train"][0]
    assert len(spm_tok.encode(doc)) < 0.7 * len(doc)
    # Cached on disk: the second call loads the same model without training.
    files = list((cache_dir / "spm").glob(f"{small_corpus.corpus_id}-v400-*.model"))
    assert len(files) == 1
    again = rd.get_tokenizer("sentencepiece", corpus=small_corpus, vocab_size=400, cache_dir=cache_dir)
    assert again.model_proto == spm_tok.model_proto


def test_get_tokenizer_errors():
    assert isinstance(rd.get_tokenizer("byte"), rd.ByteTokenizer)
    with pytest.raises(rd.DataError, match="unknown tokenizer"):
        rd.get_tokenizer("wordpiece")
    with pytest.raises(rd.DataError, match="needs a corpus"):
        rd.get_tokenizer("sentencepiece")


# -------------------------------------------------------------------- packing
def _unique_docs(rng, n_docs: int, max_len: int, min_len: int = 0):
    """Docs whose token ids are globally unique, so a target names (doc, pos)."""
    lengths = rng.integers(min_len, max_len, n_docs)
    ids = rng.permutation(int(lengths.sum())).astype(np.int32) + 2  # 0 = pad, 1 = bos
    return np.split(ids, np.cumsum(lengths)[:-1]), int(lengths.sum()) + 2


def _segments(batches, docs, token_num_bytes) -> list[tuple[int, np.ndarray]]:
    """Checks the format and that each segment is consecutive tokens of ONE doc; -> [(doc, targets)]."""
    where = {int(t): (d, i) for d, doc in enumerate(docs) for i, t in enumerate(doc)}
    out = []
    for b in batches:
        assert sorted(b) == sorted(BATCH_KEYS)
        for k, v in b.items():
            assert v.shape == b["inputs"].shape and v.dtype == (np.float32 if k == "weights" else np.int32)
        pad = b["segment_ids"] == 0
        np.testing.assert_array_equal(b["weights"], (~pad).astype(np.float32))
        np.testing.assert_array_equal(b["num_bytes"], np.where(pad, 0, token_num_bytes[b["targets"]]))
        assert (b["inputs"][pad] == 0).all() and (b["targets"][pad] == 0).all()
        for r, seg in enumerate(b["segment_ids"]):
            real = seg[seg > 0]
            assert (np.diff(seg[: real.size]) >= 0).all() and not seg[real.size :].any()
            for s in np.unique(real):
                m = seg == s
                inp, tgt, pos = b["inputs"][r, m], b["targets"][r, m], b["positions"][r, m]
                np.testing.assert_array_equal(pos, np.arange(m.sum()))
                d, i0 = where[int(tgt[0])]
                np.testing.assert_array_equal(tgt, docs[d][i0 : i0 + tgt.size])
                np.testing.assert_array_equal(inp, np.concatenate([[1], docs[d]])[i0 : i0 + tgt.size])
                out.append((d, tgt))
    return out


class _IdTokenizer:
    """Maps source document ``b"<i>"`` to the fixed ids ``docs[i]``: exact (doc, position) tracking."""

    name, pad_id, bos_id = "ids", 0, 1

    def __init__(self, docs: list[np.ndarray], vocab_size: int) -> None:
        self.docs, self.vocab_size = docs, vocab_size
        self.token_num_bytes = np.r_[0, 0, np.ones(vocab_size - 2)].astype(np.int32)  # [vocab]

    def encode(self, text: bytes) -> np.ndarray:
        return self.docs[int(text)]


def _assert_same(want: list, got: list) -> None:
    for w, g in zip(want, got, strict=True):
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(w[k], g[k])
            assert w[k].dtype == g[k].dtype


def _all_targets(segments) -> list[int]:
    return sorted(np.concatenate([t for _, t in segments]).tolist())


def test_chunk_index_matches_definition():
    n = np.random.default_rng(0).integers(1, 40, 50)  # tokens per doc, BOS included (1: empty doc)
    starts = np.concatenate([[0], np.cumsum(n)])
    for seq_len in (1, 4, 7):
        idx = rd.ChunkIndex.build(starts, seq_len)
        want = [
            (int(s) + k * seq_len, min(seq_len + 1, int(m) - k * seq_len), d)
            for d, (s, m) in enumerate(zip(starts[:-1], n))
            for k in range(-(-(m - 1) // seq_len))
        ]
        assert list(zip(idx.start.tolist(), idx.length.tolist())) == [w[:2] for w in want]
        assert np.diff(idx.doc_first).tolist() == [sum(w[2] == d for w in want) for d in range(len(n))]


@pytest.mark.parametrize("seq_len,batch_size,max_len", [(8, 3, 40), (5, 1, 12), (16, 4, 6)])
def test_packing_properties(seq_len, batch_size, max_len):
    rng = np.random.default_rng(seq_len)
    docs, vocab = _unique_docs(rng, 30, max_len)
    token_num_bytes = rng.integers(1, 5, vocab).astype(np.int32)
    token_num_bytes[:2] = 0
    kw = dict(seq_len=seq_len, batch_size=batch_size, bos_id=1, token_num_bytes=token_num_bytes)
    batches = list(rd.pack_documents(docs, **kw))
    assert all(b["inputs"].shape == (batch_size, seq_len) for b in batches)
    # Every non-BOS token of every document is a target exactly once.
    assert _all_targets(_segments(batches, docs, token_num_bytes)) == sorted(np.concatenate(docs).tolist())


def test_packing_rejects_out_of_vocab_ids():
    kw = dict(seq_len=4, batch_size=2, bos_id=1, token_num_bytes=np.ones(10, np.int32))
    with pytest.raises(rd.DataError, match=r"token id 12 .*vocab_size 10"):
        list(rd.pack_documents([np.array([3, 12, 4])], **kw))
    with pytest.raises(rd.DataError, match="token id 130 .*vocab_size 100"):
        rd.make_train_iterator(
            [b"0"], _IdTokenizer([np.array([2, 130])], 100), seq_len=4, batch_size=2, seed=0
        )


# --------------------------------------------------------------------- corpus
def test_corpus_splits_deterministic_disjoint_and_cached(small_corpus, cache_dir):
    root = pathlib.Path(small_corpus.spec).resolve()
    paths = {
        s: {pathlib.Path(d.path).relative_to(root).as_posix() for d in small_corpus[s].docs}
        for s in rd.corpus.SPLITS
    }
    assert paths["train"] and paths["validation"]
    assert not paths["train"] & paths["validation"]
    assert len(paths["train"] | paths["validation"]) == 24
    for s, ps in paths.items():
        assert all(corpus_mod.split_of(p, 0.25) == s for p in ps)
    assert small_corpus.stats["validation"]["docs"] == len(paths["validation"])
    # Stable across processes with another hash seed.
    code = (
        "import json,sys; from rocket.data.sources.files import split_of; "
        "print(json.dumps({p: split_of(p, 0.25) for p in json.load(sys.stdin)}))"
    )
    allp = sorted(paths["train"] | paths["validation"])
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    kw = dict(input=json.dumps(allp), capture_output=True, text=True, check=True, env=env)
    out = subprocess.run([sys.executable, "-c", code], **kw)
    assert json.loads(out.stdout) == {p: corpus_mod.split_of(p, 0.25) for p in allp}
    # Unchanged corpus -> same id, not prepared again.
    info = cache_dir / "corpora" / f"{small_corpus.corpus_id}.json"
    mtime = info.stat().st_mtime_ns
    again = rd.prepare_corpus(small_corpus.spec, val_fraction=0.25, cache_dir=cache_dir)
    assert again.corpus_id == small_corpus.corpus_id
    assert info.stat().st_mtime_ns == mtime
    assert again["train"][0] == small_corpus["train"][0]


def test_corpus_glob_and_changes_get_new_id(tmp_path, caplog):
    root = _write_corpus(tmp_path / "c", n_files=12)
    (root / "notes.txt").write_text("not python\n")
    (root / "broken.py").symlink_to(root / "missing.py")  # unreadable: skipped
    a = rd.prepare_corpus(str(root / "**" / "*.py"), val_fraction=0.3, cache_dir=tmp_path / "cache")
    assert "skipping 1 unreadable corpus file" in caplog.text
    assert sum(v["docs"] for v in a.stats.values()) == 12
    (root / "m001.py").write_text("# changed\n")
    b = rd.prepare_corpus(str(root / "**" / "*.py"), val_fraction=0.3, cache_dir=tmp_path / "cache")
    assert b.corpus_id != a.corpus_id


def test_corpus_errors(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(rd.DataError, match="does not exist"):
        rd.prepare_corpus(str(tmp_path / "nope"), cache_dir=cache)
    with pytest.raises(rd.DataError, match="matched no files"):
        rd.prepare_corpus(str(tmp_path / "*.zzz"), cache_dir=cache)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(rd.DataError, match="no readable files"):
        rd.prepare_corpus(str(empty), cache_dir=cache)
    for i in range(3):
        (empty / f"f{i}.txt").write_bytes(b"")
    with pytest.raises(rd.DataError, match="is empty"):
        rd.prepare_corpus(str(empty), cache_dir=cache)
    (empty / "f0.txt").write_text("one lonely document\n")
    with pytest.raises(rd.DataError, match="split would be empty"):
        rd.prepare_corpus(str(empty), val_fraction=0.05, cache_dir=cache)
    # TFDS catalog corpora are refused with a pointer to the supported sources.
    with pytest.raises(rd.DataError, match="use hf:<name>"):
        rd.prepare_corpus("tfds:lm1b", cache_dir=cache)


# ------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def id_corpus():
    """20 multi-chunk documents of unique ids, their tokenizer and their (in-memory) token split."""
    docs, vocab = _unique_docs(np.random.default_rng(1), 20, 120, min_len=1)
    tok = _IdTokenizer(docs, vocab)
    return docs, tok, rd.tokenize_split([str(i).encode() for i in range(len(docs))], tok)


def _stream(it, docs, tok, num_segments: int) -> list[tuple[int, np.ndarray]]:
    """The first ``num_segments`` chunks of a batch_size=1 iterator (one row keeps stream order)."""
    segs: list[tuple[int, np.ndarray]] = []
    while len(segs) < num_segments:
        segs += _segments([next(it)], docs, tok.token_num_bytes)
    return segs[:num_segments]


@pytest.mark.parametrize("shard_count", [1, 3])
def test_train_epochs_cover_every_target_once(id_corpus, shard_count):
    """Per epoch, every non-BOS token is a target exactly once; shards partition the chunks."""
    docs, tok, split = id_corpus
    num_chunks, epochs = sum(-(-len(d) // 8) for d in docs), ([], [])  # ceil((n - 1) / seq_len)
    for k in range(shard_count):
        kw = dict(seq_len=8, batch_size=1, seed=5, shard_index=k, shard_count=shard_count)
        n = len(range(k, num_chunks, shard_count))
        segs = _stream(rd.make_train_iterator(split, tok, **kw), docs, tok, 2 * n)
        epochs[0].extend(segs[:n])
        epochs[1].extend(segs[n:])
    every = sorted(np.concatenate(docs).tolist())
    assert _all_targets(epochs[0]) == every and _all_targets(epochs[1]) == every
    assert [d for d, _ in epochs[0]] != [d for d, _ in epochs[1]]  # reshuffled
    with pytest.raises(rd.DataError, match="bad shard"):
        rd.make_train_iterator(split, tok, seq_len=8, batch_size=1, seed=0, shard_index=3, shard_count=3)


def test_train_batches_mix_documents(id_corpus):
    docs, tok, split = id_corpus
    first = []
    for seed in (0, 1):
        it = rd.make_train_iterator(split, tok, seq_len=8, batch_size=8, seed=seed)
        for i in range(5):
            b = next(it)
            assert len({d for d, _ in _segments([b], docs, tok.token_num_bytes)}) >= 4
            first += [b["targets"]] if i == 0 else []
    assert not np.array_equal(*first)


def test_train_resume_is_bitwise_exact_everywhere(id_corpus):
    docs, tok, split = id_corpus
    kw = dict(seq_len=8, batch_size=3, seed=3)
    it = rd.make_train_iterator(split, tok, **kw)
    states, batches, epoch = [], [], sum(len(d) for d in docs)
    while sum(b["weights"].sum() for b in batches) < 2.2 * epoch:  # crosses two epoch boundaries
        states.append(json.loads(json.dumps(it.get_state())))
        batches.append(next(it))
    fresh = rd.make_train_iterator(split, tok, **kw)
    for k in range(len(batches) - 1):
        fresh.set_state(states[k])
        _assert_same(batches[k : k + 2], [next(fresh), next(fresh)])


@pytest.mark.parametrize("tok_name", ["byte", "sentencepiece"])
def test_train_iterator_resume_is_bitwise_exact(small_corpus, spm_tok, tok_name):
    tok, src = rd.ByteTokenizer() if tok_name == "byte" else spm_tok, small_corpus["train"]
    it = rd.make_train_iterator(src, tok, seq_len=16, batch_size=3, seed=3)
    _ = [next(it) for _ in range(5)]
    state = json.loads(json.dumps(it.get_state()))
    fresh = rd.make_train_iterator(src, tok, seq_len=16, batch_size=3, seed=3)
    fresh.set_state(state)
    _assert_same([next(it) for _ in range(3)], [next(fresh) for _ in range(3)])
    other = rd.make_train_iterator(src, tok, seq_len=16, batch_size=3, seed=4)
    with pytest.raises(rd.DataError, match="state was saved"):
        other.set_state(state)


def test_token_cache_built_once_and_validated(small_corpus, tmp_path, monkeypatch):
    src, tok = small_corpus["train"], rd.ByteTokenizer()
    built = rd.tokenize_split(src, tok, key="c-train", cache_dir=tmp_path)
    assert built.tokens.dtype == np.uint16 and isinstance(built.tokens, np.memmap)
    assert built.doc_starts.dtype == np.int64 and built.num_docs == len(src)
    for d in range(len(src)):
        np.testing.assert_array_equal(built.doc(d), np.concatenate([[1], tok.encode(src[d])]))
    monkeypatch.setattr(rd.ByteTokenizer, "encode", None)  # re-tokenizing would raise TypeError
    loaded = rd.tokenize_split(src, tok, key="c-train", cache_dir=tmp_path)
    np.testing.assert_array_equal(loaded.tokens, built.tokens)
    np.testing.assert_array_equal(loaded.doc_starts, built.doc_starts)
    monkeypatch.undo()
    docs = [np.array([2, 70000]), np.array([5])]  # ids > 65535: int32 tokens
    big = rd.tokenize_split([b"0", b"1"], _IdTokenizer(docs, 70001))
    assert big.tokens.dtype == np.int32 and big.tokens.tolist() == [1, 2, 70000, 1, 5]
    with pytest.raises(rd.DataError, match=r"token id 70000 .*vocab_size 300"):
        rd.tokenize_split([b"0", b"1"], _IdTokenizer(docs, 300), key="bad", cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "tokens").iterdir()] == ["c-train-byte258-t1"]  # no leftovers


def test_eval_batches_deterministic_and_complete(small_corpus):
    tok, src = rd.ByteTokenizer(), small_corpus["validation"]
    kw = dict(seq_len=32, batch_size=4)
    full = rd.make_eval_batches(src, tok, max_batches=None, **kw)
    again = rd.make_eval_batches(src, tok, max_batches=None, **kw)
    _assert_same(full, again)
    total = sum(len(src[i]) for i in range(len(src)))
    assert sum(int(b["num_bytes"].sum()) for b in full) == total
    assert sum(int(b["weights"].sum()) for b in full) == total
    assert full[-1]["weights"].sum() < full[-1]["weights"].size  # padded
    first = rd.make_eval_batches(src, tok, max_batches=1, **kw)
    assert len(first) == 1
    np.testing.assert_array_equal(first[0]["targets"], full[0]["targets"])
    sharded = rd.make_eval_batches(src, tok, max_batches=50, shard_index=1, shard_count=2, **kw)
    assert len(sharded) == 50 and sharded[-1]["weights"].sum() == 0


def test_build_data(small_corpus, cache_dir):
    kw = dict(seq_len=32, batch_size=2, seed=0, val_fraction=0.25, cache_dir=cache_dir, eval_batches=3)
    data = rd.build_data(small_corpus.spec, "byte", **kw)
    assert isinstance(data, rd.Data) and data.corpus.corpus_id == small_corpus.corpus_id
    assert len(data.eval_batches) <= 3 and data.stats["eval"]["tokens"] > 0
    assert data.stats["train"]["docs"] == len(small_corpus["train"])
    assert data.stats["train"]["tokens"] == data.stats["train"]["bytes"]  # byte tokenizer
    assert len(list((cache_dir / "tokens").glob(f"{small_corpus.corpus_id}-*-byte258-*"))) == 2
    assert next(data.train)["inputs"].shape == (2, 32)


def test_stdlib_corpus(cache_dir):
    corpus = rd.prepare_corpus("stdlib", cache_dir=cache_dir)
    assert corpus.stats["train"]["docs"] > 500 and corpus.stats["validation"]["docs"] > 10
    it = rd.make_train_iterator(corpus["train"], rd.ByteTokenizer(), seq_len=256, batch_size=8, seed=0)
    fill = np.mean([next(it)["weights"].mean() for _ in range(20)])
    assert fill > 0.9
