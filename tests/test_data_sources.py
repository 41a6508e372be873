"""Corpus sources: one text file (split by bytes), binary files, JSONL / Parquet records and
streamed Hugging Face datasets (exact resume, disjoint and complete host shards). Offline: every
corpus is written by the test."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

import rocket.data as rd  # noqa: E402
from rocket.data.stream import StreamChunks, shard_stream  # noqa: E402

TOK = rd.ByteTokenizer()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        f"doc {i:03d} " + "".join(rng.choice(list("abc xyz\n"), int(rng.integers(1, 90)))) for i in range(n)
    ]


def _targets(batches) -> list[int]:
    """Every target token id of a list of batches, sorted."""
    return sorted(np.concatenate([b["targets"][b["weights"] > 0] for b in batches]).tolist())


def _doc_targets(docs: list[bytes]) -> list[int]:
    return sorted(np.concatenate([TOK.encode(d) for d in docs]).tolist())


def _stream_iter(corpus: rd.Corpus, **kw) -> rd.DataIterator:
    held_out = corpus.stream.held_out(list(corpus["validation"]))
    return rd.make_stream_iterator(corpus.stream, TOK, held_out=held_out, **kw)


def _epoch_targets(
    corpus: rd.Corpus, n_targets: int, shard_index: int = 0, shard_count: int = 1
) -> list[int]:
    """Target ids of the first ``n_targets`` targets' worth of chunks of this host's stream."""
    held_out = corpus.stream.held_out(list(corpus["validation"]))
    kw = dict(seq_len=16, seed=0, window=8, shard_index=shard_index, shard_count=shard_count)
    it, got = iter(StreamChunks(corpus.stream, TOK, held_out=held_out, **kw)), []
    while len(got) < n_targets:
        got += next(it)[1:].tolist()
    assert len(got) == n_targets  # an epoch ends on a chunk boundary
    return sorted(got)


def test_one_text_file_is_split_by_bytes_at_a_line_break(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text("".join(f"line {i} of the only file\n" for i in range(400)))
    c = rd.prepare_corpus(str(path), val_fraction=0.1, cache_dir=tmp_path / "cache")
    train, val = c["train"][0], c["validation"][0]
    assert len(c["train"]) == len(c["validation"]) == 1
    assert train + val == path.read_bytes() and train.endswith(b"\n")
    assert abs(len(val) / path.stat().st_size - 0.1) < 0.01
    assert c.stats["validation"]["bytes"] == len(val)
    kw = dict(val_fraction=0.1, cache_dir=tmp_path / "cache", eval_batches=None)
    data = rd.build_data(str(path), seq_len=32, batch_size=2, **kw)
    assert _targets(data.eval_batches) == _doc_targets([val])  # bits/byte counts every byte once
    assert sum(int(b["num_bytes"].sum()) for b in data.eval_batches) == len(val)


def test_binary_files_are_skipped_with_one_warning_and_a_binary_corpus_is_refused(tmp_path, caplog):
    root = tmp_path / "mixed"
    root.mkdir()
    for i in range(6):
        (root / f"t{i}.txt").write_text(f"text file {i}\n" * 20)
    (root / "blob.bin").write_bytes(bytes(range(256)) * 4)  # NUL bytes
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))  # invalid UTF-8
    (root / "empty.txt").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        c = rd.prepare_corpus(str(root), val_fraction=0.3, cache_dir=tmp_path / "cache")
    lines = [r.getMessage() for r in caplog.records if "binary" in r.getMessage()]
    assert len(lines) == 1 and "skipping 2 binary file(s)" in lines[0] and "1 empty file(s)" in lines[0]
    docs = [c[s][i] for s in ("train", "validation") for i in range(len(c[s]))]
    assert sorted(docs) == sorted((root / f"t{i}.txt").read_bytes() for i in range(6))
    for i in range(4):
        (root / f"b{i}.bin").write_bytes(b"\0\1\2" * 100)
    for i in range(6):
        (root / f"t{i}.txt").unlink()
    with pytest.raises(rd.DataError, match="mostly binary"):
        rd.prepare_corpus(str(root), val_fraction=0.3, cache_dir=tmp_path / "cache")


def _records(n: int) -> list[dict]:
    recs = [{"text": t, "id": i} for i, t in enumerate(_texts(n))]
    recs[3]["text"] = ""  # empty
    del recs[5]["text"]  # missing
    recs[7]["text"] = None  # null
    return recs


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_records_split_and_count_bad_records(tmp_path, caplog, fmt):
    recs = _records(60)
    folder = tmp_path / fmt
    folder.mkdir()
    for k in range(2):
        part = recs[k * 30 : (k + 1) * 30]
        if fmt == "jsonl":
            (folder / f"part{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        else:
            rows = [{"text": r.get("text"), "id": r["id"]} for r in part]
            datasets.Dataset.from_list(rows).to_parquet(str(folder / f"part{k}.parquet"))
    with caplog.at_level(logging.WARNING):
        c = rd.prepare_corpus(str(folder / f"*.{fmt}"), val_fraction=0.2, cache_dir=tmp_path / "cache")
    assert "skipping 3 of 60 record(s): 2 without the field 'text', 1 with empty text" in caplog.text
    got = [c[s][i].decode() for s in ("train", "validation") for i in range(len(c[s]))]
    assert sorted(got) == sorted(r["text"] for r in recs if r.get("text"))  # a partition of the texts
    assert 0 < c.stats["validation"]["docs"] < c.stats["train"]["docs"]
    with pytest.raises(
        rd.DataError, match=r"no record has the field 'body'; its fields are \['id', 'text'\]"
    ):
        rd.prepare_corpus(str(folder / f"*.{fmt}"), text_field="body", cache_dir=tmp_path / "cache")


@pytest.fixture(scope="module")
def hub_like(tmp_path_factory):
    """The same 120 records as a folder of 2 Parquet files (what a hub dataset is) and as a
    dataset saved with save_to_disk; records 10 and 11 have empty / missing text."""
    root = tmp_path_factory.mktemp("hf")
    rows = [{"text": t, "id": i} for i, t in enumerate(_texts(120, seed=1))]
    rows[10]["text"], rows[11]["text"] = "", None
    ds = datasets.Dataset.from_list(rows)
    (root / "pq").mkdir()
    ds.select(range(60)).to_parquet(str(root / "pq" / "train-0.parquet"))
    ds.select(range(60, 120)).to_parquet(str(root / "pq" / "train-1.parquet"))
    ds.save_to_disk(str(root / "saved"))
    return root, [(r["text"] or "").encode() for r in rows]


@pytest.mark.parametrize("kind", ["pq", "saved"])
def test_streamed_corpus_holds_out_the_first_records_and_trains_on_the_rest(hub_like, kind, tmp_path):
    root, texts = hub_like
    c = rd.prepare_corpus(f"hf:{root / kind}", val_docs=8, cache_dir=tmp_path)
    assert c.stream is not None and list(c["validation"]) == texts[:8]
    want = [t for t in texts[8:] if t]
    assert _epoch_targets(c, sum(map(len, want))) == _doc_targets(want)  # one epoch: every record once
    assert len(c["train"]) > 0 and c["train"][0] == texts[8]  # the tokenizer's training sample
    data = rd.build_data(
        f"hf:{root / kind}", seq_len=16, batch_size=2, val_docs=8, cache_dir=tmp_path, eval_batches=None
    )
    assert sum(int(b["num_bytes"].sum()) for b in data.eval_batches) == sum(
        map(len, texts[:8])
    )  # exact bits/byte
    assert data.stats["train"] == {"docs": None, "bytes": None, "tokens": None}


def test_streamed_resume_is_bitwise_exact_across_windows_and_epochs(hub_like, tmp_path):
    root, texts = hub_like
    c = rd.prepare_corpus(f"hf:{root / 'pq'}", val_docs=8, cache_dir=tmp_path)
    kw = dict(seq_len=32, batch_size=4, seed=7, window=16)
    it = _stream_iter(c, **kw)
    ref, states = [], []
    for _ in range(150):  # ~2.5 epochs
        states.append(json.loads(json.dumps(it.get_state())))  # as the checkpoint stores it
        ref.append(next(it))
    assert (
        len({s["grain"]["epoch"] for s in states}) >= 3 and len({s["grain"]["window"] for s in states}) > 10
    )
    for k in (0, 1, 17, 58, 59, 60, 101, 149):
        again = _stream_iter(c, **kw)
        again.set_state(states[k])
        for b in ref[k : k + 12]:
            got = next(again)
            assert all(np.array_equal(b[key], got[key]) for key in rd.BATCH_KEYS)
    other = _stream_iter(c, **{**kw, "seed": 8})
    with pytest.raises(rd.DataError, match="was saved for"):
        other.set_state(states[3])


@pytest.mark.parametrize("kind", ["pq", "saved"])  # 2 files: whole files per host; 1: every 2nd record
def test_two_hosts_stream_disjoint_and_complete_shards(hub_like, kind, tmp_path):
    root, texts = hub_like
    c = rd.prepare_corpus(f"hf:{root / kind}", val_docs=8, cache_dir=tmp_path)
    ids = [[r["id"] for r in shard_stream(c.stream.open("train"), k, 2)] for k in range(2)]
    assert not set(ids[0]) & set(ids[1]) and sorted(ids[0] + ids[1]) == list(range(120))
    assert abs(len(ids[0]) - len(ids[1])) <= 1
    per_host = []
    for k in range(2):
        per_host += _epoch_targets(c, sum(len(texts[i]) for i in ids[k] if i >= 8), k, 2)
    assert sorted(per_host) == _doc_targets([t for t in texts[8:] if t])


def test_streamed_corpus_errors(hub_like, tmp_path):
    root, _ = hub_like
    with pytest.raises(
        rd.DataError, match=r"records have no field 'body'; their fields are \['id', 'text'\]"
    ):
        rd.prepare_corpus(f"hf:{root / 'pq'}", text_field="body", cache_dir=tmp_path)
    with pytest.raises(rd.DataError, match="could not open"):
        rd.prepare_corpus(f"hf:{root / 'pq'}", val_split="nope", cache_dir=tmp_path)
    with pytest.raises(rd.DataError, match="decomposition needs a prepared corpus"):
        rd.build_data(f"hf:{root / 'pq'}", seq_len=16, batch_size=2, cache_dir=tmp_path, val_docs=4,
                      decomposition=rd.build.DecompositionSpec(3, "uniform", 1))  # fmt: skip


def test_local_corpora_prepare_silently_without_tfds(tmp_path, capfd, caplog):
    import sys

    root = tmp_path / "c"
    root.mkdir()
    for i in range(8):
        (root / f"f{i}.txt").write_text(f"file {i}\n" * 10)
    with caplog.at_level(logging.INFO):
        rd.prepare_corpus(str(root), val_fraction=0.3, cache_dir=tmp_path / "cache")
        rd.prepare_corpus(str(root / "f0.txt"), cache_dir=tmp_path / "cache")
    out = capfd.readouterr()
    assert out.out == "" and out.err == "" and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "tensorflow_datasets" not in sys.modules and "tensorflow" not in sys.modules
