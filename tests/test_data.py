"""Tests for rocket.data: tokenizers, TFDS corpus, packing, grain pipeline.

Never touches the network; corpora are tiny tmp folders (one test uses stdlib).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

import rocket.data as rd
from rocket.data import corpus as corpus_mod
from rocket.data.packing import BATCH_KEYS

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
    words = [
        "def",
        "return",
        "self",
        "import",
        "x",
        "value",
        "for",
        "in",
        "if",
        "else:",
        "(",
        ")",
        "über",
        "日本",
        "print",
        "    ",
        "\t",
    ]
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
def _unique_docs(rng, n_docs: int, max_len: int):
    """Docs whose token ids are globally unique, so a target names (doc, pos)."""
    lengths = rng.integers(0, max_len, n_docs)
    ids = rng.permutation(int(lengths.sum())) + 2  # 0 = pad, 1 = bos
    docs, start = [], 0
    for n in lengths:
        docs.append(ids[start : start + n].astype(np.int32))
        start += n
    return docs, int(lengths.sum()) + 2


@pytest.mark.parametrize("seq_len,batch_size,max_len", [(8, 3, 40), (5, 1, 12), (16, 4, 6)])
def test_packing_properties(seq_len, batch_size, max_len):
    rng = np.random.default_rng(seq_len)
    docs, vocab = _unique_docs(rng, 30, max_len)
    token_num_bytes = rng.integers(1, 5, vocab).astype(np.int32)
    token_num_bytes[:2] = 0
    where = {int(t): (d, i) for d, doc in enumerate(docs) for i, t in enumerate(doc)}
    batches = list(
        rd.pack_documents(
            docs, seq_len=seq_len, batch_size=batch_size, bos_id=1, token_num_bytes=token_num_bytes
        )
    )
    seen: list[int] = []
    for b in batches:
        assert sorted(b) == sorted(BATCH_KEYS)
        for k, v in b.items():
            assert v.shape == (batch_size, seq_len)
            assert v.dtype == (np.float32 if k == "weights" else np.int32)
        pad = b["segment_ids"] == 0
        np.testing.assert_array_equal(b["weights"], (~pad).astype(np.float32))
        np.testing.assert_array_equal(b["num_bytes"], np.where(pad, 0, token_num_bytes[b["targets"]]))
        assert (b["inputs"][pad] == 0).all() and (b["targets"][pad] == 0).all()
        for r in range(batch_size):
            seg = b["segment_ids"][r]
            real = seg[seg > 0]
            assert (np.diff(seg[: real.size]) >= 0).all() and not seg[real.size :].any()
            for s in np.unique(real):
                m = seg == s
                inp, tgt, pos = b["inputs"][r, m], b["targets"][r, m], b["positions"][r, m]
                np.testing.assert_array_equal(pos, np.arange(m.sum()))
                d, i0 = where[int(tgt[0])]
                doc = docs[d]
                # Whole segment = consecutive tokens of ONE document.
                np.testing.assert_array_equal(tgt, doc[i0 : i0 + tgt.size])
                prev = np.concatenate([[1], doc])  # BOS + doc
                np.testing.assert_array_equal(inp, prev[i0 : i0 + tgt.size])
                seen.extend(tgt.tolist())
    # Every non-BOS token of every document is a target exactly once.
    assert sorted(seen) == sorted(int(t) for doc in docs for t in doc)


def test_packing_rejects_out_of_vocab_ids():
    with pytest.raises(rd.DataError, match=r"token id 12 .*vocab_size 10"):
        list(
            rd.pack_documents(
                [np.array([3, 12, 4])],
                seq_len=4,
                batch_size=2,
                bos_id=1,
                token_num_bytes=np.ones(10, np.int32),
            )
        )
    src = [b"ok", "ü".encode()]  # byte ids >= 130, over a vocab of 100

    class Tiny(rd.ByteTokenizer):
        vocab_size = 100

        def __init__(self):
            self.token_num_bytes = np.ones(100, np.int32)

    it = rd.make_train_iterator(src, Tiny(), seq_len=4, batch_size=2, seed=0)
    with pytest.raises(rd.DataError, match="vocab_size 100"):
        for _ in range(5):
            next(it)


# --------------------------------------------------------------------- corpus
def test_corpus_splits_deterministic_disjoint_and_cached(small_corpus, cache_dir):
    paths = {
        s: {small_corpus[s].raw[i]["path"].decode() for i in range(len(small_corpus[s]))}
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
        "import json,sys; from rocket.data.corpus import split_of; "
        "print(json.dumps({p: split_of(p, 0.25) for p in json.load(sys.stdin)}))"
    )
    allp = sorted(paths["train"] | paths["validation"])
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(allp),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert json.loads(out.stdout) == {p: corpus_mod.split_of(p, 0.25) for p in allp}
    # Unchanged corpus -> same id, not prepared again.
    info = next(pathlib.Path(small_corpus.data_dir).glob("**/dataset_info.json"))
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


def test_corpus_errors(tmp_path, monkeypatch):
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
    # Offline catalog dataset: fails fast with a clear message, no tfds hang.
    monkeypatch.setattr(corpus_mod, "network_available", lambda *a, **k: False)
    t0 = time.perf_counter()
    with pytest.raises(rd.DataError, match="network is unreachable"):
        rd.prepare_corpus("tfds:xyz", cache_dir=cache)
    assert time.perf_counter() - t0 < 5


# ------------------------------------------------------------------- pipeline
def _doc_starts(batches) -> list[bytes]:
    """First target bytes of every document-starting chunk, in stream order."""
    out = []
    for b in batches:
        rows, cols = np.nonzero((b["inputs"] == 1) & (b["segment_ids"] > 0))
        for r, c in sorted(zip(rows.tolist(), cols.tolist())):
            out.append(bytes((b["targets"][r, c : c + 10] - 2).astype(np.uint8)))
    return out


def test_train_iterator_epochs_cover_every_document_once(small_corpus):
    tok, src = rd.ByteTokenizer(), small_corpus["train"]
    n = len(src)
    it = rd.make_train_iterator(src, tok, seq_len=64, batch_size=1, seed=7)
    starts: list[bytes] = []
    while len(starts) < 2 * n:
        starts.extend(_doc_starts([next(it)]))
    starts = starts[: 2 * n]  # batch_size=1: one row keeps stream order
    expected = sorted(src[i][:10] for i in range(n))
    assert sorted(starts[:n]) == expected and sorted(starts[n:]) == expected
    assert starts[:n] != starts[n:]  # reshuffled each epoch


def test_train_iterator_shards_are_disjoint(small_corpus):
    tok, src = rd.ByteTokenizer(), small_corpus["train"]
    seen = []
    for k in range(2):
        it = rd.make_train_iterator(src, tok, seq_len=64, batch_size=2, seed=0, shard_index=k, shard_count=2)
        starts: set[bytes] = set()
        for _ in range(40):
            starts |= set(_doc_starts([next(it)]))
        seen.append(starts)
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {src[i][:10] for i in range(len(src))}


@pytest.mark.parametrize("tok_name", ["byte", "sentencepiece"])
def test_train_iterator_resume_is_bitwise_exact(small_corpus, spm_tok, tok_name):
    tok = rd.ByteTokenizer() if tok_name == "byte" else spm_tok
    kw = dict(seq_len=16, batch_size=3, seed=3)
    it = rd.make_train_iterator(small_corpus["train"], tok, **kw)
    for _ in range(5):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    if tok_name == "byte":
        assert state["grain"]["chunk"] > 0  # restores mid-document
    want = [next(it) for _ in range(3)]
    fresh = rd.make_train_iterator(small_corpus["train"], tok, **kw)
    fresh.set_state(state)
    got = [next(fresh) for _ in range(3)]
    for w, g in zip(want, got):
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(w[k], g[k])
            assert w[k].dtype == g[k].dtype
    other = rd.make_train_iterator(small_corpus["train"], tok, seq_len=16, batch_size=3, seed=4)
    with pytest.raises(rd.DataError, match="state was saved"):
        other.set_state(state)


def test_eval_batches_deterministic_and_complete(small_corpus):
    tok, src = rd.ByteTokenizer(), small_corpus["validation"]
    kw = dict(seq_len=32, batch_size=4)
    full = rd.make_eval_batches(src, tok, max_batches=None, **kw)
    again = rd.make_eval_batches(src, tok, max_batches=None, **kw)
    assert len(full) == len(again)
    for a, b in zip(full, again):
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(a[k], b[k])
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
    data = rd.build_data(
        small_corpus.spec,
        "byte",
        seq_len=32,
        batch_size=2,
        seed=0,
        val_fraction=0.25,
        cache_dir=cache_dir,
        eval_batches=3,
    )
    assert isinstance(data, rd.Data) and data.corpus.corpus_id == small_corpus.corpus_id
    assert len(data.eval_batches) <= 3 and data.stats["eval"]["tokens"] > 0
    assert data.stats["train"]["docs"] == len(small_corpus["train"])
    assert next(data.train)["inputs"].shape == (2, 32)


def test_stdlib_corpus(cache_dir):
    corpus = rd.prepare_corpus("stdlib", cache_dir=cache_dir)
    assert corpus.stats["train"]["docs"] > 500 and corpus.stats["validation"]["docs"] > 10
    it = rd.make_train_iterator(corpus["train"], rd.ByteTokenizer(), seq_len=256, batch_size=8, seed=0)
    fill = np.mean([next(it)["weights"].mean() for _ in range(20)])
    assert fill > 0.9
