"""Loading calibration windows: the spec picks the source, the source makes the windows."""

from __future__ import annotations

from analysis.calibration.base import Calibration, CalibrationError, vocab_size
from analysis.calibration.files import DEFAULT_MAX_BYTES, pretokenized_windows
from analysis.calibration.sampling import document_windows
from analysis.calibration.sources import READER_VERSION, fingerprint_of, open_source
from analysis.calibration.specs import parse_spec
from analysis.calibration.synthetic import random_windows, selfgen_windows
from analysis.settings import CalibrationSettings


def load_calibration(
    settings: CalibrationSettings,
    tokenizer,
    *,
    model=None,
    on_gpu: bool = False,
    held_out: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Calibration | tuple[Calibration, Calibration]:
    """The N x T ranking windows; with `held_out=n`, also n disjoint held-out windows.

    Raises `CalibrationError` for bad sources and `analysis.settings.SettingsError` for N
    or T out of range. Returns `(ranking, held_out)` when `held_out > 0`.
    """
    if isinstance(held_out, bool) or not isinstance(held_out, int) or held_out < 0:
        raise CalibrationError(f"held_out must be a non-negative integer; got {held_out!r}")
    ranking, held = _load(settings, tokenizer, model, on_gpu, held_out, max_bytes)
    return (ranking, held) if held_out else ranking


def load_held_out(
    settings: CalibrationSettings,
    tokenizer,
    n: int,
    *,
    model=None,
    on_gpu: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Calibration:
    """n further windows of T tokens, disjoint from `load_calibration`'s windows."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CalibrationError(f"the number of held-out windows must be >= 1; got {n!r}")
    return _load(settings, tokenizer, model, on_gpu, n, max_bytes)[1]


def _load(settings, tokenizer, model, on_gpu, held_out, max_bytes):
    if tokenizer is None:
        raise CalibrationError("a tokenizer is needed to build calibration windows; load the "
                               "model's tokenizer first")
    resolved = settings.resolved(on_gpu)  # SettingsError for N or T out of range
    n, t, seed = resolved.samples, resolved.seqlen, resolved.seed
    kind, name = parse_spec(resolved.spec)
    base = {"spec": resolved.spec, "kind": kind, "source": name, "samples": n, "seqlen": t,
            "seed": seed, "text_column": resolved.text_column,
            "tokenizer": str(getattr(tokenizer, "name_or_path", "") or ""),
            "vocab_size": vocab_size(tokenizer, None),
            "reader_version": READER_VERSION}

    if kind == "builtin" and name == "random":
        return random_windows(resolved, tokenizer, model, held_out, base)
    if kind == "builtin" and name == "selfgen":
        return selfgen_windows(resolved, tokenizer, model, held_out, base)

    source = open_source(kind, name, resolved, max_bytes)
    base.update(source.info)
    base["source_fingerprint"] = fingerprint_of(source, resolved)
    if source.input_ids is not None:
        return pretokenized_windows(source, tokenizer, model, held_out, base)
    return document_windows(source, resolved, tokenizer, held_out, base)
