"""Hugging Face ``datasets`` corpora, streamed: ``hf:<name>[:<config>]``.

``name`` is a hub dataset id (``HuggingFaceFW/fineweb-edu``), a local folder of data files
(JSONL / Parquet / CSV / text, as ``datasets.load_dataset`` reads it) or a folder written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``. Every kind is opened as a
``datasets.IterableDataset`` (``streaming=True``; ``load_from_disk(...).to_iterable_dataset()``
for saved datasets), so nothing is downloaded or tokenized ahead: the train split is read record
by record while training (``rocket.data.stream``). Validation is the first ``val_docs`` records
of ``val_split`` when given, else of ``split``; then the train stream drops every record whose
text equals a held-out one (so the held-out records never train, on any host, however the stream
is sharded). Records whose text field is missing or empty are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import socket
import threading
from typing import Any

from rocket.data.packing import DataError

_log = logging.getLogger(__name__)

SAMPLE_BYTES = 8 << 20  # text read from the train stream to train a tokenizer on


@dataclasses.dataclass
class SkipCounts:
    """Records skipped so far: no text field (or null) / empty text."""

    missing: int = 0
    empty: int = 0

    def total(self) -> int:
        return self.missing + self.empty


def record_text(record: dict[str, Any], field: str, counts: SkipCounts) -> bytes | None:
    """The UTF-8 text of ``record[field]``, or None (counted in ``counts``) if missing or empty."""
    text = record.get(field)
    if text is None:
        counts.missing += 1
        return None
    if not isinstance(text, str):
        raise DataError(f"field {field!r} holds {type(text).__name__}, not text (set data.text_field)")
    if not text:
        counts.empty += 1
        return None
    return text.encode("utf-8")


def _is_saved_dataset(path: pathlib.Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


@dataclasses.dataclass(frozen=True)
class HFStream:
    """A streamed ``datasets`` corpus: where it is, which splits, which text field."""

    name: str
    config: str | None = None
    split: str = "train"
    val_split: str = ""
    val_docs: int = 256
    text_field: str = "text"

    @classmethod
    def parse(cls, spec: str, **kw: Any) -> HFStream:
        """``hf:<name>[:<config>]`` (a local path may itself contain no ``:``)."""
        body = spec.removeprefix("hf:").strip()
        name, _, config = body.partition(":")
        if not name:
            raise DataError(f"corpus {spec!r}: give a dataset, as hf:<name>[:<config>]")
        return cls(name=name, config=config or None, **kw)

    @property
    def spec(self) -> str:
        return f"hf:{self.name}" + (f":{self.config}" if self.config else "")

    @property
    def corpus_id(self) -> str:
        key = f"{self.spec};{self.split};{self.val_split};{self.val_docs};{self.text_field}"
        base = pathlib.Path(self.name).name or "local"
        return "hf-" + hashlib.sha1(key.encode()).hexdigest()[:10] + "-" + base.replace("/", "_")

    def open(self, split: str) -> Any:
        """``split`` as a ``datasets.IterableDataset`` (nothing read yet)."""
        import datasets

        datasets.disable_progress_bars()
        path = pathlib.Path(self.name).expanduser()
        try:
            if path.is_dir() and _is_saved_dataset(path):
                ds = datasets.load_from_disk(str(path))
                if isinstance(ds, datasets.DatasetDict):
                    ds = ds[split]
                return ds.to_iterable_dataset()
            if not path.exists() and not os.environ.get("HF_HUB_OFFLINE") and not _hub_reachable():
                raise DataError(
                    f"corpus {self.spec!r} streams from the Hugging Face hub, which is unreachable; "
                    "use a local folder, JSONL/Parquet files or text files"
                )
            return datasets.load_dataset(self.name, self.config, split=split, streaming=True)
        except DataError:
            raise
        except Exception as e:  # datasets raises many types; surface one line
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DataError(
                f"could not open {self.spec!r} split {split!r}: {e.__class__.__name__}: {msg}"
            ) from None

    def read_docs(
        self, ds: Any, max_docs: int, max_bytes: int | None = None, exclude: frozenset[bytes] = frozenset()
    ) -> list[bytes]:
        """The texts of the first ``max_docs`` records of ``ds`` (stopping after ``max_bytes``),
        less those in ``exclude``."""
        docs, counts, size = [], SkipCounts(), 0
        for i, record in enumerate(ds.take(max_docs)):
            if i == 0 and self.text_field not in record:
                raise DataError(
                    f"corpus {self.spec!r}: records have no field {self.text_field!r}; their fields are "
                    f"{sorted(record)} (set data.text_field)"
                )
            text = record_text(record, self.text_field, counts)
            if text is not None and text not in exclude:
                docs.append(text)
                size += len(text)
                if max_bytes is not None and size >= max_bytes:
                    break
        if counts.total():
            _log.warning(
                "corpus %r: skipped %d record(s): %d without the field %r, %d with empty text",
                self.spec,
                counts.total(),
                counts.missing,
                self.text_field,
                counts.empty,
            )
        return docs

    def held_out(self, validation: list[bytes]) -> frozenset[bytes]:
        """The texts the train stream must drop: the validation texts if they come from ``split``."""
        return frozenset() if self.val_split and self.val_split != self.split else frozenset(validation)

    def validation_docs(self) -> list[bytes]:
        """The held-out documents (the same on every host; evaluation shards them)."""
        docs = self.read_docs(self.open(self.val_split or self.split), self.val_docs)
        if not docs:
            raise DataError(f"corpus {self.spec!r}: the validation records hold no text")
        return docs


class StreamSample:
    """The first ~``SAMPLE_BYTES`` of training text, read on first use (to train a tokenizer)."""

    def __init__(self, stream: HFStream, held_out: frozenset[bytes]) -> None:
        self.stream = stream
        self.held_out = held_out
        self._docs: list[bytes] | None = None

    def _load(self) -> list[bytes]:
        if self._docs is None:
            ds = self.stream.open(self.stream.split)
            self._docs = self.stream.read_docs(ds, 1 << 62, SAMPLE_BYTES, self.held_out)
        return self._docs

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, i: int) -> bytes:
        return self._load()[i]


def network_available(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    """Fast connectivity probe, bounded even when DNS resolution hangs."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


def _hub_reachable() -> bool:
    return network_available("huggingface.co")
