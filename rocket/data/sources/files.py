"""Local text files as documents: a folder, a glob, ``"stdlib"`` or one text file.

Every document is a byte range of a file (:class:`Doc`). A folder or a glob gives one document
per file, and a file goes to ``validation`` iff ``sha1(relative path) / 2**64 < val_fraction``
(independent of Python's hash seed, of the machine and of the other files). A single text file
(nanoGPT's ``input.txt``) is split by bytes instead: its first ``1 - val_fraction`` of the bytes
(cut at a line break) is the training document, the rest the validation document.

Binary files (a NUL byte or invalid UTF-8 in their first 64 KiB) and empty files are skipped and
counted in one warning line; a corpus that is mostly binary is refused. The resolved document
list is written once to ``<cache>/corpora/<corpus_id>.json`` and read back on later runs.
"""

from __future__ import annotations

import codecs
import dataclasses
import glob as globlib
import hashlib
import json
import logging
import os
import pathlib
import sysconfig
from collections.abc import Sequence

from rocket.data.packing import DataError

_log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
_FORMAT_VERSION = "2"  # bump to invalidate every prepared local corpus
_GLOB_CHARS = set("*?[")
_HEAD_BYTES = 1 << 16  # bytes read per file to tell text from binary


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One corpus file: absolute path, path relative to the corpus root, stat."""

    path: str
    relpath: str
    size: int
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class Doc:
    """One document: ``length`` bytes of file ``path`` from byte ``start``."""

    path: str
    start: int
    length: int


class FileText:
    """Random-access text split: ``src[i]`` -> the bytes of document ``i`` (read on demand)."""

    def __init__(self, docs: Sequence[Doc]) -> None:
        self.docs = list(docs)

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, index: int) -> bytes:
        d = self.docs[index]
        with open(d.path, "rb") as f:
            f.seek(d.start)
            return f.read(d.length)

    def __repr__(self) -> str:
        return f"FileText(len={len(self)})"


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


def is_glob(spec: str) -> bool:
    return bool(_GLOB_CHARS & set(spec))


def _glob_files(pattern: str) -> tuple[pathlib.Path, list[pathlib.Path]]:
    pattern = os.path.expanduser(pattern)
    base_parts = []
    for p in pathlib.Path(pattern).parts:
        if is_glob(p):
            break
        base_parts.append(p)
    root = pathlib.Path(*base_parts) if base_parts else pathlib.Path(".")
    return root.resolve(), [pathlib.Path(p) for p in globlib.glob(pattern, recursive=True)]


def resolve_files(spec: str) -> tuple[pathlib.Path, list[FileEntry]]:
    """Resolves a local corpus spec to (root, sorted readable file entries)."""
    if spec == "stdlib":
        root, paths = _stdlib_files()
    elif is_glob(spec):
        root, paths = _glob_files(spec)
        if not paths:
            raise DataError(f"corpus glob {spec!r} matched no files")
    else:
        root = pathlib.Path(spec).expanduser()
        if not root.exists():
            raise DataError(f"corpus path {spec!r} does not exist")
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


def corpus_id_of(entries: Sequence[FileEntry], val_fraction: float, kind: str = "files") -> str:
    """Content-addressed id of a local corpus (file list + stat + split rule)."""
    h = hashlib.sha1(f"v{_FORMAT_VERSION};{kind};{val_fraction!r};".encode())
    for e in entries:
        h.update(f"{e.path}\0{e.relpath}\0{e.size}\0{e.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def is_binary(head: bytes) -> bool:
    """A NUL byte, or bytes that are not UTF-8 (a multi-byte character cut at the end is fine)."""
    if b"\0" in head:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return True
    return False


def _text_entries(entries: Sequence[FileEntry], spec: str) -> list[FileEntry]:
    """The non-empty text files; one warning line counts the skipped ones; refuses a binary corpus."""
    text, binary, empty = [], [], 0
    for e in entries:
        if e.size == 0:
            empty += 1
            continue
        with open(e.path, "rb") as f:
            (binary if is_binary(f.read(_HEAD_BYTES)) else text).append(e)
    if len(binary) > len(text):
        raise DataError(
            f"corpus {spec!r} is mostly binary: {len(binary)} of {len(entries)} file(s) contain NUL "
            f"bytes or invalid UTF-8 (e.g. {binary[0].relpath!r}); point it at text files"
        )
    if binary or empty:
        names = ", ".join(e.relpath for e in binary[:3]) + (" ..." if len(binary) > 3 else "")
        _log.warning(
            "corpus %r: skipping %d binary file(s) (NUL bytes or invalid UTF-8%s) and %d empty file(s)",
            spec,
            len(binary),
            f": {names}" if binary else "",
            empty,
        )
    if not text:
        raise DataError(f"corpus {spec!r} is empty: all {len(entries)} file(s) have zero bytes")
    return text


def _split_files(files: Sequence[FileEntry], val_fraction: float, spec: str) -> dict[str, list[Doc]]:
    out: dict[str, list[Doc]] = {s: [] for s in SPLITS}
    for e in files:
        out[split_of(e.relpath, val_fraction)].append(Doc(e.path, 0, e.size))
    for s in SPLITS:
        if not out[s]:
            raise DataError(
                f"corpus {spec!r} has {len(files)} non-empty file(s) but its {s!r} split would be empty "
                f"with val_fraction={val_fraction} (files are split by a hash of their path); add more "
                "files, or give one text file, which is split by bytes"
            )
    return out


def _split_bytes(e: FileEntry, val_fraction: float) -> dict[str, list[Doc]]:
    """One file cut at the first line break after byte ``(1 - val_fraction) * size``."""
    cut = int(e.size * (1.0 - val_fraction))
    with open(e.path, "rb") as f:
        f.seek(cut)
        nl = f.read(1 << 20).find(b"\n")
    cut = cut + nl + 1 if 0 <= nl and cut + nl + 1 < e.size else cut
    if not 0 < cut < e.size:
        raise DataError(f"corpus file {e.path!r} ({e.size} bytes) is too small to split")
    return {"train": [Doc(e.path, 0, cut)], "validation": [Doc(e.path, cut, e.size - cut)]}


def prepare_files(
    spec: str, val_fraction: float, cache_root: pathlib.Path
) -> tuple[str, dict[str, FileText], dict[str, dict[str, int | None]]]:
    """(corpus_id, {split: FileText}, {split: {"docs", "bytes"}}) of a local text corpus."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    single = spec != "stdlib" and not is_glob(spec) and pathlib.Path(spec).expanduser().is_file()
    _, entries = resolve_files(spec)
    cid = corpus_id_of(entries, val_fraction, "bytes" if single else "files")
    manifest = cache_root / "corpora" / f"{cid}.json"
    if manifest.exists():
        splits = {s: [Doc(*d) for d in docs] for s, docs in json.loads(manifest.read_text()).items()}
    else:
        files = _text_entries(entries, spec)
        splits = _split_bytes(files[0], val_fraction) if single else _split_files(files, val_fraction, spec)
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({s: [dataclasses.astuple(d) for d in docs] for s, docs in splits.items()}))
        os.replace(tmp, manifest)  # atomic: concurrent hosts never read a partial manifest
    stats = {s: {"docs": len(docs), "bytes": sum(d.length for d in docs)} for s, docs in splits.items()}
    return cid, {s: FileText(docs) for s, docs in splits.items()}, stats
