"""From a parsed spec to its documents, and the fingerprint of a source's text."""

from __future__ import annotations

import hashlib
from pathlib import Path

from analysis.calibration.base import Source
from analysis.calibration.builtin import Document, builtin_documents, open_builtin, text_digest
from analysis.calibration.files import DEFAULT_MAX_BYTES, check_file, file_sha256, open_file
from analysis.calibration.presets import PRESETS, open_preset
from analysis.calibration.specs import parse_spec
from analysis.settings import CalibrationSettings

READER_VERSION = 1
"""Bump when the way files or builtins are turned into documents changes (cache keys)."""


def source_fingerprint(settings: CalibrationSettings, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """A sha256 hex that changes when the source's text would change; no tokenizer needed.

    Files: their bytes. `builtin:licenses|pydocs`: the collected text. Presets: the dataset
    id, config, split and column (hub datasets are not versioned here). `builtin:selfgen`
    and `builtin:random`: the spec (the model and seed are part of the caller's key).
    """
    kind, name = parse_spec(settings.spec)
    if kind == "file":
        path = check_file(name, max_bytes)
        return _source_identity_hash(kind, name, settings, file_sha256=file_sha256(path))
    documents = builtin_documents(name) if name in ("licenses", "pydocs") else None
    return _source_identity_hash(kind, name, settings, documents=documents)


def _source_identity_hash(kind: str, name: str, settings: CalibrationSettings, *,
                          file_sha256: str | None = None,
                          documents: list[Document] | None = None) -> str:
    if kind == "file":
        suffix = Path(name).suffix.lower()
        identity = f"file:{suffix}:{file_sha256}:{settings.text_column}"
    elif kind == "builtin" and documents is not None:
        identity = f"builtin:{name}:{text_digest(documents)}"
    elif kind == "preset":
        p = PRESETS[name]
        identity = f"preset:{name}:{p.repo_ids[0]}:{p.config}:{p.data_files}:{p.split}:{p.column}"
    else:
        identity = f"builtin:{name}"
    return hashlib.sha256(f"v{READER_VERSION}|{identity}".encode()).hexdigest()


def open_source(kind: str, name: str, settings: CalibrationSettings, max_bytes: int) -> Source:
    if kind == "builtin":
        return open_builtin(name)
    if kind == "preset":
        return open_preset(name, settings.samples or 0)
    return open_file(name, settings.text_column, max_bytes)


def fingerprint_of(source: Source, settings: CalibrationSettings) -> str:
    """`source_fingerprint` of a source already open."""
    documents = None
    if source.kind == "builtin":  # reuse the collected text instead of collecting it again
        documents = [Document(n, t or "")
                     for n, t in zip(source.doc_names, source.documents, strict=True)]
    return _source_identity_hash(source.kind, settings.spec.strip() if source.kind == "file"
                                 else source.name, settings,
                                 file_sha256=source.info.get("file_sha256"), documents=documents)
