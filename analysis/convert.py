"""GGUF files converted once into float safetensors folders under `cache/models/`.

transformers dequantizes a GGUF file on every load, which takes 20-60 s (mostly the
tokenizer), so each is converted once into `cache/models/<name>/` as float safetensors +
tokenizer. The conversion is written to a temporary folder and renamed into place only when
complete, so a killed process never leaves a folder that looks valid.

The completion marker records the source GGUF's content hash and the size and content hash
of every file written. Each use checks the folder against it (the identity index keeps that
to a stat per file once the files have been hashed), so a file truncated or edited since
(a disk error, a tensor overwritten by hand) is converted again instead of being used or
failing every run with advice that does not help.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from analysis.architectures import get_architecture
from analysis.errors import EntroDropError
from analysis.identity import IdentityError, content_hash, file_identity
from analysis.paths import (
    atomic_write_text,
    cache_dir,
    disk_shortfall,
    make_temp_dir,
    remove_stale_temp_dirs,
    tensor_bytes,
)

Progress = Callable[[float, str], None]

COMPLETE_MARKER = "entrodrop-converted.json"
# 2: the marker records each written file's size and SHA-256, and the source's full hash.
CONVERSION_VERSION = 2
_FREE_SPACE_HINT = "free some space or set ENTRODROP_CACHE_DIR to a folder on a larger disk"


class ModelLoadError(EntroDropError):
    """A model spec cannot be loaded; the message says why and what to do next.

    Defined here rather than in analysis.models because converting a GGUF file is the
    first step of loading one, and analysis.models builds on this module."""


class ConvertedModelChanged(UserWarning):
    """A converted folder no longer matches what was written; it is converted again."""


def converted_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def conversion_problem(folder: Path, source_identity: str) -> str | None:
    """Why `folder` is not a complete, unchanged conversion of the GGUF file whose
    `file_identity` is `source_identity`; None when it is one."""
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return "it has no completion marker"
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
        version, source, files = meta["version"], meta["source_identity"], meta["files"]
        expected = {name: (int(f["size"]), str(f["sha256"])) for name, f in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its marker {COMPLETE_MARKER} is unreadable"
    if version != CONVERSION_VERSION:
        return "it was converted by another version of EntroDrop"
    if source != source_identity:
        return "the GGUF file changed since it was converted"
    for name, (size, digest) in sorted(expected.items()):
        path = folder / name
        try:
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size or file_identity(path) != digest:
                return f"{name} changed since it was converted"
        except (OSError, IdentityError):
            return f"{name} cannot be read"
    for path in sorted(folder.iterdir()):
        if (path.name not in expected and path.name != COMPLETE_MARKER
                and not path.name.startswith(".") and path.is_file()):
            return f"{path.name} was added since it was converted"
    return None


def convert_gguf(gguf_path: Path, target: Path, progress: Progress | None = None) -> Path:
    """Convert a GGUF file once into a float safetensors folder at `target` (atomic); a
    folder that no longer matches its marker is converted again, with a one-line notice."""
    source_identity = file_identity(gguf_path)
    if target.exists():
        problem = conversion_problem(target, source_identity)
        if problem is None:
            return target
        notice = f"{target}: {problem}; converting again"
        report(progress, 0.02, notice)
        warnings.warn(notice, ConvertedModelChanged, stacklevel=2)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report(progress, 0.05, f"converting {gguf_path.name} to safetensors (once; 20-60 s)")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(target.parent)  # left by a conversion that was killed
    tmp = make_temp_dir(target.parent, target.name)
    tmp.chmod(0o755)
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            report(progress, 0.4, "tokenizer converted; dequantizing weights")
            src = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
            )
        except Exception as e:  # corrupt/truncated GGUF and unknown GGUF architectures
            raise ModelLoadError(
                f"cannot read GGUF file {str(gguf_path)!r}: it is truncated, corrupt or not a "
                f"model GGUF ({one_line(e)}). Download or export it again.") from e
        get_architecture(src)
        model = _rebuild_without_quantization(src)
        del src
        # A conversion that fills the disk would fail halfway, after a minute of work.
        shortfall = disk_shortfall(target.parent, tensor_bytes(model.state_dict().values()))
        if shortfall is not None:
            need, free = shortfall
            raise ModelLoadError(
                f"not enough free disk space to convert {gguf_path.name}: it needs about "
                f"{need // 2**20} MiB in {target.parent}, and {free // 2**20} MiB are free; "
                f"{_FREE_SPACE_HINT}")
        report(progress, 0.8, "writing safetensors")
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            written = {p.name: {"size": p.stat().st_size, "sha256": content_hash(p)}
                       for p in sorted(tmp.iterdir()) if p.is_file()}
            atomic_write_text(tmp / COMPLETE_MARKER, json.dumps({
                "version": CONVERSION_VERSION, "source": str(gguf_path),
                "source_identity": source_identity, "converted_at": time.time(),
                "files": written,
            }, indent=1, sort_keys=True))
        except OSError as e:
            if e.errno == errno.ENOSPC:  # the estimate above was too low
                raise ModelLoadError(
                    f"the disk holding {target.parent} filled up while converting "
                    f"{gguf_path.name}; {_FREE_SPACE_HINT}") from e
            raise
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report(progress, 0.9, "conversion done")
    return target


def _rebuild_without_quantization(model):
    """A GGUF-loaded model refuses save_pretrained: rebuild it from a clean config."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    real_missing = [m for m in missing if "lm_head" not in m or not config.tie_word_embeddings]
    if real_missing or unexpected:
        raise ModelLoadError(f"GGUF conversion lost weights: missing={real_missing} unexpected={unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.generation_config = copy.deepcopy(model.generation_config)
    return fresh.eval()


def report(progress: Progress | None, frac: float, msg: str) -> None:
    if progress is not None:
        progress(frac, msg)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(e).__name__
