"""JSONL and Parquet files (local, a path or a glob) as documents: one record's text field each.

The files are loaded once with Hugging Face ``datasets`` (``load_dataset("json" | "parquet",
data_files=...)``, an Arrow cache under ``<cache>/hf``, memory-mapped, random access). Records
whose text field is missing (null) or empty are skipped and counted in one warning line; a field
that no record has is an error naming the fields the records do have. A record goes to
``validation`` iff a fixed pseudo-random draw ``u_i ~ U[0, 1)`` (PCG64, seed 0, one per record
in file order) is below ``val_fraction``.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import numpy as np

from rocket.data.packing import DataError
from rocket.data.sources.files import corpus_id_of, is_glob, resolve_files

_log = logging.getLogger(__name__)

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def record_format(spec: str) -> str | None:
    """``"json"`` or ``"parquet"`` when ``spec`` (a path or glob) names JSONL / Parquet files."""
    name = spec.lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".zst")
    return next((fmt for suffix, fmt in FORMATS.items() if name.endswith(suffix)), None)


class RecordText:
    """Random-access text split: ``src[i]`` -> UTF-8 bytes of record ``index[i]``'s text field."""

    def __init__(self, table: Any, field: str, index: np.ndarray) -> None:
        self.table = table  # datasets.Dataset
        self.field = field
        self.index = index  # [n] int64 record ids

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, i: int) -> bytes:
        return self.table[int(self.index[i])][self.field].encode("utf-8")

    def __repr__(self) -> str:
        return f"RecordText(len={len(self)}, field={self.field!r})"


def text_lengths(column: Any, field: str, where: str) -> np.ndarray:
    """UTF-8 byte length of every value of an Arrow string column; -1 where null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataError(f"{where}: field {field!r} holds {column.type}, not text")
    return pc.fill_null(pc.binary_length(column), -1).to_numpy().astype(np.int64)


def _load(fmt: str, files: list[str], cache_dir: pathlib.Path) -> Any:
    import datasets

    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(fmt, data_files=files, split="train", cache_dir=str(cache_dir))
    except Exception as e:  # datasets/pyarrow raise many types; surface one line
        raise DataError(f"could not read {fmt} files {files[0]!r}...: {e.__class__.__name__}: {e}") from None


def prepare_records(
    spec: str, fmt: str, *, text_field: str, val_fraction: float, cache_root: pathlib.Path
) -> tuple[str, dict[str, RecordText], dict[str, dict[str, int | None]]]:
    """(corpus_id, {split: RecordText}, {split: {"docs", "bytes"}}) of JSONL / Parquet files."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    _, entries = resolve_files(spec)
    table = _load(fmt, [e.path for e in entries], cache_root / "hf")
    where = f"corpus {spec!r}"
    if text_field not in table.column_names:
        raise DataError(
            f"{where}: no record has the field {text_field!r}; its fields are {sorted(table.column_names)} "
            "(set data.text_field)"
        )
    lengths = text_lengths(table.data.column(text_field), text_field, where)  # [n]
    missing, empty = int((lengths < 0).sum()), int((lengths == 0).sum())
    if missing or empty:
        _log.warning(
            "%s: skipping %d of %d record(s): %d without the field %r, %d with empty text",
            where,
            missing + empty,
            lengths.shape[0],
            missing,
            text_field,
            empty,
        )
    is_val = np.random.default_rng(0).random(lengths.shape[0]) < val_fraction  # [n]
    index = {
        "train": np.flatnonzero((lengths > 0) & ~is_val),
        "validation": np.flatnonzero((lengths > 0) & is_val),
    }
    for s, ids in index.items():
        if ids.shape[0] == 0:
            raise DataError(
                f"{where}: its {s!r} split would be empty ({int((lengths > 0).sum())} non-empty records, "
                f"val_fraction={val_fraction})"
            )
    kind = f"records:{fmt}:{text_field}:{'glob' if is_glob(spec) else 'path'}"
    cid = corpus_id_of(entries, val_fraction, kind)
    stats = {s: {"docs": int(ids.shape[0]), "bytes": int(lengths[ids].sum())} for s, ids in index.items()}
    texts = table.select_columns([text_field])  # reading a record reads only its text
    return cid, {s: RecordText(texts, text_field, ids) for s, ids in index.items()}, stats
