"""Text corpora as TFDS datasets (array_record), read back with random access.

``prepare_corpus(spec)`` accepts:

* ``"stdlib"``: the running Python's standard-library ``.py`` sources.
* a folder: every non-hidden regular file below it (recursively).
* a glob (``"data/**/*.txt"``, recursive ``**`` allowed).
* ``"tfds:<catalog_name>"``: a TFDS catalog dataset (needs the network once).

Local corpora are written by the :class:`LocalText` builder into
``<cache>/tfds/local/<corpus_id>/`` where ``corpus_id`` hashes the resolved
file list (paths, sizes, mtimes) and ``val_fraction``: an unchanged corpus is
prepared once, different corpora never collide. A file goes to ``validation``
iff ``sha1(relative path) / 2**64 < val_fraction`` (independent of Python's
hash seed, of the machine and of the other files).
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import hashlib
import logging
import os
import pathlib
import socket
import sysconfig
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from rocket.data.packing import DataError
from rocket.data.tokenizers import default_cache_dir

_log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
_FORMAT_VERSION = "1"  # bump to invalidate every prepared local corpus
_GLOB_CHARS = set("*?[")


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One corpus file: absolute path, path relative to the corpus root, stat."""

    path: str
    relpath: str
    size: int
    mtime_ns: int


def split_of(relpath: str, val_fraction: float) -> str:
    """'validation' iff sha1(relpath) as a fraction of 2**64 < val_fraction."""
    h = int.from_bytes(hashlib.sha1(relpath.encode("utf-8")).digest()[:8], "big")
    return "validation" if h / 2**64 < val_fraction else "train"


def _stdlib_files() -> tuple[pathlib.Path, list[pathlib.Path]]:
    root = pathlib.Path(sysconfig.get_paths()["stdlib"]).resolve()
    files = [
        p
        for p in root.rglob("*.py")
        if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts)
    ]
    return root, files


def _folder_files(root: pathlib.Path) -> list[pathlib.Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(pathlib.Path(dirpath, f) for f in filenames if not f.startswith("."))
    return out


def _glob_files(pattern: str) -> tuple[pathlib.Path, list[pathlib.Path]]:
    pattern = os.path.expanduser(pattern)
    parts = pathlib.Path(pattern).parts
    base_parts = []
    for p in parts:
        if _GLOB_CHARS & set(p):
            break
        base_parts.append(p)
    root = pathlib.Path(*base_parts) if base_parts else pathlib.Path(".")
    files = [pathlib.Path(p) for p in globlib.glob(pattern, recursive=True)]
    return root.resolve(), files


def resolve_files(spec: str) -> tuple[pathlib.Path, list[FileEntry]]:
    """Resolves a local corpus spec to (root, sorted readable file entries)."""
    if spec == "stdlib":
        root, paths = _stdlib_files()
    elif _GLOB_CHARS & set(spec):
        root, paths = _glob_files(spec)
        if not paths:
            raise DataError(f"corpus glob {spec!r} matched no files")
    else:
        root = pathlib.Path(spec).expanduser()
        if not root.exists():
            raise DataError(f"corpus folder {spec!r} does not exist")
        if root.is_file():
            root, paths = root.resolve().parent, [root]
        else:
            root, paths = root.resolve(), _folder_files(root)
    entries, skipped = [], []
    for p in paths:
        try:
            st = p.stat()
            if not p.is_file():
                continue
            if not os.access(p, os.R_OK):
                raise PermissionError("not readable")
        except OSError as e:
            skipped.append(f"{p} ({e.__class__.__name__})")
            continue
        full = p.resolve()
        try:
            rel = full.relative_to(root).as_posix()
        except ValueError:
            rel = full.as_posix()
        entries.append(FileEntry(str(full), rel, st.st_size, st.st_mtime_ns))
    if skipped:
        _log.warning(
            "skipping %d unreadable corpus file(s): %s%s",
            len(skipped),
            ", ".join(skipped[:5]),
            " ..." if len(skipped) > 5 else "",
        )
    if not entries:
        raise DataError(f"corpus {spec!r} contains no readable files")
    return root, sorted(entries, key=lambda e: e.relpath)


def corpus_id_of(entries: Sequence[FileEntry], val_fraction: float) -> str:
    """Content-addressed id of a local corpus (file list + stat + split rule)."""
    h = hashlib.sha1(f"v{_FORMAT_VERSION};{val_fraction!r};".encode())
    for e in entries:
        h.update(f"{e.path}\0{e.relpath}\0{e.size}\0{e.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def assign_splits(
    entries: Sequence[FileEntry], val_fraction: float, spec: str = "corpus"
) -> dict[str, list[FileEntry]]:
    """Splits non-empty files deterministically; raises DataError if one is empty."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    nonempty = [e for e in entries if e.size > 0]
    if not nonempty:
        raise DataError(f"corpus {spec!r} is empty: all {len(entries)} file(s) have zero bytes")
    out: dict[str, list[FileEntry]] = {s: [] for s in SPLITS}
    for e in nonempty:
        out[split_of(e.relpath, val_fraction)].append(e)
    for s in SPLITS:
        if not out[s]:
            raise DataError(
                f"corpus {spec!r} has {len(nonempty)} non-empty file(s) but its "
                f"{s!r} split would be empty with val_fraction={val_fraction}; "
                "add more files or change val_fraction"
            )
    return out


try:
    import tensorflow_datasets as tfds
except ImportError as _e:  # pragma: no cover
    raise ImportError("rocket.data.corpus needs tensorflow-datasets") from _e


class LocalText(tfds.core.GeneratorBasedBuilder):
    """TFDS builder over local text files. Features: ``text``, ``path`` (bytes).

    Construct with ``files={split: [FileEntry, ...]}`` to prepare; reading an
    already prepared corpus needs only ``data_dir``.
    """

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, files: dict[str, list[FileEntry]] | None = None, **kwargs: Any) -> None:
        self._files = files
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local text files, one document per file.",
            features=tfds.features.FeaturesDict({"text": tfds.features.Text(), "path": tfds.features.Text()}),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        if self._files is None:
            raise DataError("LocalText needs `files` to prepare a corpus")
        return {s: self._generate_examples(self._files[s]) for s in SPLITS}

    def _generate_examples(self, files: list[FileEntry]) -> Iterator:
        for e in files:
            try:
                data = pathlib.Path(e.path).read_bytes()
            except OSError as err:
                _log.warning("skipping unreadable corpus file %s: %s", e.path, err)
                continue
            if data:
                yield e.relpath, {"text": data, "path": e.relpath}


class TextSource:
    """Random-access view of one split: ``src[i]`` -> document bytes."""

    def __init__(self, raw: Any, text_key: str = "text") -> None:
        self.raw = raw  # the tfds data source; items are feature dicts
        self.text_key = text_key

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> bytes:
        text = self.raw[index][self.text_key]
        return text.encode("utf-8") if isinstance(text, str) else bytes(text)

    def __repr__(self) -> str:
        return f"TextSource(len={len(self)})"


class Corpus(dict):
    """``{split: TextSource}`` plus ``corpus_id``, ``spec``, ``stats``, ``data_dir``."""

    def __init__(
        self,
        sources: dict[str, TextSource],
        *,
        corpus_id: str,
        spec: str,
        stats: dict[str, dict[str, int | None]],
        data_dir: str,
    ) -> None:
        super().__init__(sources)
        self.corpus_id = corpus_id
        self.spec = spec
        self.stats = stats  # {split: {"docs": n, "bytes": b or None}}
        self.data_dir = data_dir


def network_available(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 2.0) -> bool:
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


def _prepare_local(spec: str, val_fraction: float, root: pathlib.Path) -> Corpus:
    _, entries = resolve_files(spec)
    files = assign_splits(entries, val_fraction, spec)
    cid = corpus_id_of(entries, val_fraction)
    data_dir = root / "local" / cid
    builder = LocalText(files=files, data_dir=str(data_dir))
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        _log.info("preparing corpus %r (%d files) in %s", spec, len(entries), data_dir)
        builder.download_and_prepare()
    stats = {
        s: {"docs": builder.info.splits[s].num_examples, "bytes": sum(e.size for e in files[s])}
        for s in SPLITS
    }
    sources = {s: TextSource(builder.as_data_source(s)) for s in SPLITS}
    return Corpus(sources, corpus_id=cid, spec=spec, stats=stats, data_dir=str(data_dir))


def _text_key(builder: Any) -> str:
    feats = builder.info.features
    if "text" in feats:
        return "text"
    for k, f in feats.items():
        if isinstance(f, tfds.features.Text):
            return k
    raise DataError(f"catalog dataset {builder.name!r} has no text feature")


def _prepare_catalog(name: str, root: pathlib.Path) -> Corpus:
    data_dir = root / "catalog"
    base = name.split("/")[0].split(":")[0]
    prepared = any((data_dir / base).glob("**/dataset_info.json"))
    if not prepared and not network_available():
        raise DataError(
            f"catalog dataset {name!r} needs a download and the network is "
            "unreachable; use a local folder/glob or 'stdlib'"
        )
    try:
        builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
        builder.download_and_prepare()
    except DataError:
        raise
    except Exception as e:  # tfds raises many types; surface one clear error
        raise DataError(f"could not prepare catalog dataset {name!r}: {e.__class__.__name__}: {e}") from None
    splits = list(builder.info.splits.keys())
    val = next((s for s in ("validation", "test") if s in splits), None)
    if "train" not in splits or val is None:
        raise DataError(
            f"catalog dataset {name!r} needs 'train' and 'validation'/'test' splits, has {splits}"
        )
    key = _text_key(builder)
    sources = {
        "train": TextSource(builder.as_data_source("train"), key),
        "validation": TextSource(builder.as_data_source(val), key),
    }
    stats = {s: {"docs": len(src), "bytes": None} for s, src in sources.items()}
    cid = "tfds-" + hashlib.sha1(name.encode()).hexdigest()[:8] + "-" + base
    return Corpus(sources, corpus_id=cid, spec=f"tfds:{name}", stats=stats, data_dir=str(data_dir))


def prepare_corpus(
    spec: str = "stdlib",
    *,
    val_fraction: float = 0.05,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Corpus:
    """Prepares (once) and opens a corpus; returns ``{"train", "validation"}`` sources.

    ``cache_dir`` is the rocket cache root (default ``$ROCKET_CACHE_DIR`` or
    ``~/.cache/rocket``); TFDS data lives under ``<cache_dir>/tfds``.
    Raises DataError for missing/empty corpora, empty splits, offline catalogs.
    """
    root = (pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "tfds"
    if spec.startswith("tfds:"):
        name = spec[len("tfds:") :].strip()
        if not name:
            raise DataError("empty catalog name in corpus spec 'tfds:'")
        return _prepare_catalog(name, root)
    return _prepare_local(spec, val_fraction, root)
