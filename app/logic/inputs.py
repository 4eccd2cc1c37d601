"""What the user gives the dashboard: the start-up model, model sources, calibration
sources and settings, and uploaded calibration files."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from analysis.errors import EntroDropError
from analysis.paths import atomic_write_bytes, cache_dir
from analysis.settings import DEFAULT_MODEL, LOAD_MODES, CalibrationSettings

ENV_MODEL = "ENTRODROP_MODEL"
ENV_LOAD = "ENTRODROP_LOAD"
ENV_UPLOAD_MAX_MB = "ENTRODROP_UPLOAD_MAX_MB"
UPLOAD_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
DEFAULT_UPLOAD_MAX_MB = 50


class UploadError(EntroDropError):
    """An uploaded calibration file is too large, empty, or of an unsupported type."""


# --------------------------------------------------------------------------- model


def startup_model_spec(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The model to preselect: `--model` after `streamlit run app.py --`, then
    $ENTRODROP_MODEL, then the bundled demo. Unknown arguments are ignored."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--model", default=None)
    known, _ = parser.parse_known_args(list(argv))
    spec = known.model or environ.get(ENV_MODEL) or DEFAULT_MODEL
    return spec.strip() or DEFAULT_MODEL


def startup_load_mode(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """How to run the model, preselected: `--load` after `streamlit run app.py --`, then
    $ENTRODROP_LOAD, then `auto`. A value that is not a load mode is ignored (`auto`)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--load", default=None)
    known, _ = parser.parse_known_args(list(argv))
    mode = (known.load or environ.get(ENV_LOAD) or "").strip()
    return mode if mode in LOAD_MODES else "auto"


def model_source_of(spec: str) -> str:
    """Which of the Model page's three inputs a spec belongs to: demo, local or hub."""
    if spec.startswith("demo:"):
        return "demo"
    path = Path(spec).expanduser()
    if path.exists() or path.suffix.lower() == ".gguf" or spec.startswith((".", "/", "~")):
        return "local"
    return "hub"


# --------------------------------------------------------------------------- calibration


def calibration_settings(specs: Sequence[str], *, samples: int, seqlen: int, seed: int,
                         text_column: str | None) -> tuple[CalibrationSettings, ...]:
    """One validated CalibrationSettings per chosen source, all with the same N, T, seed."""
    column = (text_column or "").strip() or None
    return tuple(CalibrationSettings(s, samples, seqlen, seed, column).validate() for s in specs)


def source_options(sources: Sequence[Mapping], uploaded: Sequence[str]) -> list[str]:
    """Built-in and preset specs (from `service.calibration_sources()`), then the user's
    uploaded or typed file paths."""
    names = [s["name"] for s in sources if s["kind"] != "file"]
    return names + [u for u in uploaded if u not in names]


# --------------------------------------------------------------------------- uploads


def upload_limit_bytes(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    try:
        mb = float(environ.get(ENV_UPLOAD_MAX_MB, DEFAULT_UPLOAD_MAX_MB))
    except ValueError:
        mb = DEFAULT_UPLOAD_MAX_MB
    return int(mb * 2**20)


def save_upload(name: str, data: bytes, *, max_bytes: int, folder: Path | None = None) -> Path:
    """Store an uploaded calibration file under `cache/uploads/<content hash>/<name>`.

    The content hash in the path makes a changed file a new calibration spec (and so a new
    cache key). Raises UploadError for an empty, too large or unsupported file.
    """
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise UploadError(
            f"{name!r} is not a supported calibration file; upload one of "
            f"{', '.join(UPLOAD_SUFFIXES)}"
        )
    if not data:
        raise UploadError(f"{name!r} is empty; upload a file with text in it")
    if len(data) > max_bytes:
        raise UploadError(
            f"{name!r} is {len(data) / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB "
            f"upload limit; upload a smaller sample, or give the file's path instead "
            f"(the limit is set by ${ENV_UPLOAD_MAX_MB})"
        )
    digest = hashlib.sha256(data).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).lstrip(".")
    if Path(safe).suffix.lower() != suffix:  # "....txt" would become "txt": no type left
        safe = f"upload{suffix}"
    target = (folder or cache_dir() / "uploads") / digest / safe
    if not target.is_file():
        atomic_write_bytes(target, data)
    return target
