"""The unpruned model's GGUF file for llama.cpp timings, written once per model and settings.

`engine_speed` times a pruned GGUF file against the unpruned one. The pruned file changes
with every choice of blocks; the unpruned one only with the model's content and the
settings it is written with, and it costs as much to write (minutes and gigabytes for a
large model). So it is kept in `cache_dir()/engines/base/`, one file per key: the model's
content identity (analysis.identity: every byte of its files), the dtype it is exported
from, the granularity and GGUF type, the tokenizer source, and a fingerprint of the code
and libraries that write it. A changed model, setting or writer gives another key, never
the old file. Files are written beside their final name and renamed into place, so a
reader sees a whole file or none; only the `ENTRIES_KEPT` most recently used are kept.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from analysis.paths import cache_dir, make_temp_dir, remove_stale_temp_dirs

ENTRIES_KEPT = 4
"""How many unpruned GGUF files are kept (least recently used go first)."""

# Everything that decides the bytes of the unpruned GGUF file: the Hugging Face exports
# (in memory and streamed) and the GGUF writer.
_WRITER_MODULES = ("pruning.export", "pruning.checkpoint", "pruning.export_record",
                   "pruning.streaming.export", "pruning.streaming.writer", "pruning.gguf_export",
                   "pruning.gguf_layout", "pruning.gguf_metadata")
_WRITER_PACKAGES = ("gguf", "transformers", "torch", "safetensors")


@lru_cache(maxsize=1)
def writer_fingerprint() -> str:
    """SHA-256 of the writer modules' source and the versions of the libraries they use."""
    h = hashlib.sha256()
    for name in _WRITER_MODULES:
        h.update(Path(importlib.import_module(name).__file__).read_bytes())
    for package in _WRITER_PACKAGES:
        h.update(f"{package}=={importlib.metadata.version(package)}\n".encode())
    return h.hexdigest()


def entry_key(*, identity: str, dtype: str, granularity: str, gguf_type: str,
              tokenizer_gguf: str | None) -> str:
    """The cache key of one unpruned GGUF file (hex SHA-256 of every input that shapes it)."""
    parts = {"identity": identity, "dtype": dtype, "granularity": granularity,
             "gguf_type": gguf_type, "tokenizer_gguf": tokenizer_gguf,
             "writer": writer_fingerprint()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cached_gguf(key: str, write: Callable[[Path], object]) -> Path:
    """The cached file for `key`; on a miss `write(path)` writes it to a temporary path
    first, which is then renamed into place."""
    root = cache_dir() / "engines" / "base"
    path = root / f"{key}.gguf"
    if path.is_file():
        os.utime(path)  # most recently used: the last to be evicted
        return path
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(root)  # left by a writer that was killed
    tmp = make_temp_dir(root, path.name)
    try:
        write(tmp / path.name)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _evict(root, keep=path)
    return path


def _evict(root: Path, keep: Path) -> None:
    entries = sorted((p for p in root.glob("*.gguf") if p != keep), key=_used_at, reverse=True)
    for old in entries[ENTRIES_KEPT - 1:]:
        old.unlink(missing_ok=True)


def _used_at(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # evicted by another process meanwhile
        return 0
