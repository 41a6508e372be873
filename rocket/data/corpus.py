"""Text corpora: ``prepare_corpus(spec)`` -> ``{"train", "validation"}`` document sources.

``spec`` is one of:

* ``"stdlib"``: the running Python's standard-library ``.py`` sources (the built-in corpus).
* a folder (every non-hidden file below it), a glob (``"data/**/*.txt"``) or one text file:
  ``rocket.data.sources.files`` (a folder or glob is split by file, one file by bytes).
* JSONL or Parquet files, a path or a glob ending in ``.jsonl`` / ``.json`` / ``.parquet``: one
  document per record's ``text_field`` (``rocket.data.sources.records``).
* ``"hf:<name>[:<config>]"``: a Hugging Face ``datasets`` corpus (hub id or local folder),
  streamed (``rocket.data.sources.hf``); its train split is read while training
  (``rocket.data.stream``) and never tokenized ahead.

Each split is a random-access source (``len(src)``, ``src[i] -> bytes``). For a streamed corpus,
``corpus.stream`` is set, ``corpus["validation"]`` holds the held-out documents and
``corpus["train"]`` the first ~8 MB of training text, read only if a tokenizer is trained on it.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from rocket.data.packing import DataError
from rocket.data.sources.files import SPLITS, prepare_files
from rocket.data.sources.hf import HFStream, StreamSample
from rocket.data.sources.records import prepare_records, record_format
from rocket.data.tokenizers import default_cache_dir

__all__ = ["SPLITS", "Corpus", "prepare_corpus"]


class Corpus(dict):
    """``{split: source}`` plus ``corpus_id``, ``spec``, ``stats`` and ``stream`` (None unless streamed)."""

    def __init__(
        self,
        sources: dict[str, Any],
        *,
        corpus_id: str,
        spec: str,
        stats: dict[str, dict[str, int | None]],
        stream: HFStream | None = None,
    ) -> None:
        super().__init__(sources)
        self.corpus_id = corpus_id
        self.spec = spec
        self.stats = stats  # {split: {"docs": n or None, "bytes": b or None}}
        self.stream = stream


def prepare_corpus(
    spec: str = "stdlib",
    *,
    val_fraction: float = 0.05,
    cache_dir: str | os.PathLike[str] | None = None,
    text_field: str = "text",
    split: str = "train",
    val_split: str = "",
    val_docs: int = 256,
) -> Corpus:
    """Prepares (once) and opens a corpus (see the module docstring for ``spec``).

    ``cache_dir`` is the rocket cache root (default ``$ROCKET_CACHE_DIR`` or ``~/.cache/rocket``).
    ``text_field`` names the records' text (JSONL / Parquet / ``hf:``); ``split``, ``val_split``
    and ``val_docs`` choose the splits of an ``hf:`` corpus. Raises DataError with one line for
    missing, empty, binary or unsplittable corpora and unreachable hub datasets.
    """
    root = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if spec.startswith("tfds:"):
        raise DataError(
            f"corpus {spec!r}: TFDS catalog corpora are not supported (their text builders need "
            "TensorFlow); use hf:<name> (Hugging Face datasets, streamed), JSONL/Parquet or text files"
        )
    if spec.startswith("hf:"):
        stream = HFStream.parse(
            spec, split=split, val_split=val_split, val_docs=val_docs, text_field=text_field
        )
        val = stream.validation_docs()
        stats = {
            "train": {"docs": None, "bytes": None},
            "validation": {"docs": len(val), "bytes": sum(map(len, val))},
        }
        sources = {"train": StreamSample(stream, stream.held_out(val)), "validation": val}
        return Corpus(sources, corpus_id=stream.corpus_id, spec=stream.spec, stats=stats, stream=stream)
    fmt = record_format(spec)
    if fmt is not None:
        cid, sources, stats = prepare_records(
            spec, fmt, text_field=text_field, val_fraction=val_fraction, cache_root=root
        )
    else:
        cid, sources, stats = prepare_files(spec, val_fraction, root)
    assert set(sources) == set(SPLITS)
    return Corpus(sources, corpus_id=cid, spec=spec, stats=stats)
