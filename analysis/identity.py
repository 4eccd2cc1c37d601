"""What a model's files hold: a SHA-256 of every byte, remembered per file.

Result caches are keyed by these hashes, so they must change whenever the weights do. A
hash of a file's size and ends misses an edit in the middle (an adapter merged in place
keeps the size), and a cache keyed by it serves numbers measured on other weights. Hashing
every byte cannot miss an edit, but costs about a second per GB, so each file's hash is
kept in `cache_dir()/identity/` (one small JSON entry per file, keyed by its resolved path)
with the file's stat (size, mtime_ns, ctime_ns, inode, device), as git's index does, and
reused while the stat is unchanged. SHA-256 rather than BLAKE2b because, with the SHA
instructions of current x86 and ARM CPUs, hashlib's SHA-256 measured faster (about 1-2 GB/s
against 0.7 GB/s on one core).

An entry is not trusted, and the file is hashed again, when:
- any of the five stat fields differs (an in-place write changes ctime even when the writer
  puts mtime back; a replaced file has another inode);
- it is "racy": the file's mtime or ctime is less than RACY_MARGIN_NS older than the moment
  it was statted for the entry. A write in the same timestamp tick as that stat would leave
  every field equal (git's "racy clean" problem), so only files that had been left alone
  for a while before being hashed are trusted later;
- it is unreadable, of another version or for another path: it is ignored and rewritten.

Entries are written atomically and each describes one file on its own, so two processes
hashing at once cannot corrupt the index: the last writer wins, and either entry is true.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from analysis.errors import EntroDropError
from analysis.paths import atomic_write_text, cache_dir, remove_stale_temp_files

INDEX_VERSION = 1
# FAT stores mtime to 2 s and HFS+ to 1 s; other file systems stamp files from a clock that
# ticks every few ms. 2 s covers all of them.
RACY_MARGIN_NS = 2_000_000_000
_CHUNK = 1 << 20
# The files that make a model: weights, configs, remote code, tokenizers.
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".py", ".model",
                  ".tiktoken", ".txt")
_STAT_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode", "device")
_TIDY_ABOVE = 512
_tidied: set[Path] = set()


class IdentityError(EntroDropError):
    """A model file cannot be read, or kept changing while it was hashed."""


def content_hash(path: Path) -> str:
    """SHA-256 (hex) of every byte of the file."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def file_identity(path: Path, *, index_dir: Path | None = None) -> str:
    """`content_hash(path)`, taken from the index when the file is unchanged since it was
    hashed (see the module docstring for when it is not trusted)."""
    path = Path(path).resolve()
    index = Path(index_dir) if index_dir is not None else cache_dir() / "identity"
    entry_path = index / (hashlib.sha256(os.fsencode(path)).hexdigest()[:40] + ".json")
    stat = _stat(path)
    entry = _read_entry(entry_path, path)
    if entry is not None and _trusted(entry, stat):
        return entry["sha256"]
    for _ in range(3):
        statted_ns = time.time_ns()
        before = _stat(path)
        try:
            digest = content_hash(path)
        except OSError as e:
            raise IdentityError(f"cannot read {path}: {e.strerror or e}") from e
        if _stat(path) == before:
            break
    else:
        raise IdentityError(f"{path} kept changing while it was read; wait until whatever "
                            "writes it has finished, then try again")
    _write_entry(index, entry_path, {
        "version": INDEX_VERSION, "path": str(path), "sha256": digest,
        "statted_ns": statted_ns, **dict(zip(_STAT_FIELDS, before, strict=True)),
    })
    return digest


def folder_identity(folder: Path, *, suffixes: tuple[str, ...] = MODEL_SUFFIXES,
                    exclude: tuple[str, ...] = (), index_dir: Path | None = None) -> str:
    """SHA-256 over the names and `file_identity` of the files directly in `folder` whose
    suffix is in `suffixes`, except those named in `exclude`."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).iterdir()):
        if p.suffix in suffixes and p.name not in exclude and p.is_file():
            h.update(f"{p.name}\0{file_identity(p, index_dir=index_dir)}\n".encode())
    return h.hexdigest()


def _stat(path: Path) -> tuple[int, int, int, int, int]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise IdentityError(f"cannot read {path}: {e.strerror or e}") from e
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def _trusted(entry: dict, stat: tuple[int, ...]) -> bool:
    if tuple(entry[k] for k in _STAT_FIELDS) != stat:
        return False
    _, mtime_ns, ctime_ns, _, _ = stat
    return max(mtime_ns, ctime_ns) < entry["statted_ns"] - RACY_MARGIN_NS


def _read_entry(entry_path: Path, path: Path) -> dict | None:
    try:
        entry = json.loads(entry_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (isinstance(entry, dict) and entry.get("version") == INDEX_VERSION
          and entry.get("path") == str(path)
          and all(type(entry.get(k)) is int for k in (*_STAT_FIELDS, "statted_ns"))
          and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64)
    return entry if ok else None


def _write_entry(index: Path, entry_path: Path, entry: dict) -> None:
    try:
        if index not in _tidied:
            _tidied.add(index)
            _tidy(index)
        atomic_write_text(entry_path, json.dumps(entry, sort_keys=True))
    except OSError:
        pass  # a read-only or full cache only costs a rehash next time


def _tidy(index: Path) -> None:
    """Once per process: drop files left by writers killed before their rename, and, once
    the index is large, the entries of files that no longer exist (temporary copies, models
    deleted), so that it does not grow without bound."""
    remove_stale_temp_files(index)
    entries = list(index.glob("*.json")) if index.is_dir() else []
    if len(entries) < _TIDY_ABOVE:
        return
    for entry_path in entries:
        try:
            path = json.loads(entry_path.read_text(encoding="utf-8"))["path"]
            if not os.path.exists(path):
                entry_path.unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            entry_path.unlink(missing_ok=True)
