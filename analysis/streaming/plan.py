"""Choosing between an in-memory load and layer streaming, and what streaming needs instead
of a loaded model (the tokenizer and the config, read from the checkpoint alone)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from analysis.models import resolve_device, resolve_dtype, with_pad_token
from analysis.settings import ModelSettings
from analysis.streaming.memory import free_bytes, should_stream
from analysis.streaming.sources import StreamingError, resolve_checkpoint, weight_bytes_of


@dataclass(frozen=True)
class LoadPlan:
    """How a model will be run, and the estimate behind an `auto` choice."""

    mode: Literal["memory", "stream"]
    requested: str
    """The user's choice: auto, memory or stream."""
    weight_bytes: int
    """The weights in memory at the analysis dtype, from the checkpoint's headers."""
    free_bytes: int
    """Free memory of the target device when the plan was made."""
    device: str
    dtype: str

    def describe(self) -> str:
        """One line for the Model page and the CLI."""
        need = f"{self.weight_bytes / 2**30:.2f} GiB of weights as {self.dtype}"
        free = f"{self.free_bytes / 2**30:.1f} GiB free on {self.device}"
        if self.mode == "stream":
            why = "do not fit in" if self.requested == "auto" else "(streaming was asked for;"
            tail = "" if self.requested == "auto" else ")"
            return (f"layer streaming: {need} {why} {free}{tail}; one decoder layer at a time "
                    "is read from the checkpoint")
        if self.requested == "auto":
            return f"whole model in memory: {need} fit in {free}"
        return f"whole model in memory (asked for): {need}, {free}"


def plan_load(settings: ModelSettings) -> LoadPlan:
    """Decide memory or stream for `settings` without loading anything. `auto` streams when
    the weights (plus headroom) do not fit in the target device's free memory."""
    settings.validate()
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    free = free_bytes(device)
    try:
        weights = weight_bytes_of(settings.spec, dtype)
    except StreamingError:
        # Not streamable (e.g. pickled .bin weights): only an in-memory load can read it,
        # and a user who asked for streaming is told why.
        if settings.load == "stream":
            raise
        return LoadPlan("memory", settings.load, 0, free, str(device), _name(dtype))
    if settings.load == "stream":
        mode = "stream"
    elif settings.load == "memory" or settings.device_map_auto:
        mode = "memory"  # device_map="auto" spreads an in-memory load over several GPUs
    else:
        mode = "stream" if should_stream(weights, device, free=free) else "memory"
    return LoadPlan(mode, settings.load, weights, free, str(device), _name(dtype))


def load_tokenizer(settings: ModelSettings):
    """The model's tokenizer, read from its checkpoint alone (a GGUF file's tokenizer is
    rebuilt from its metadata), with a pad token as the in-memory load sets it."""
    path = resolve_checkpoint(settings.spec)
    try:
        return checkpoint_tokenizer(
            path, trust_remote_code=bool(settings.trust_remote_code), local_files_only=True)
    except (OSError, ValueError) as e:
        raise StreamingError(
            f"cannot read the tokenizer of {settings.spec!r} ({' '.join(str(e).split())}); "
            "a streamed model needs its tokenizer files next to the weights") from e


def checkpoint_tokenizer(path: Path, **folder_kwargs):
    """The tokenizer stored with a checkpoint folder or GGUF file, padded as loads pad it."""
    from transformers import AutoTokenizer

    if path.suffix.lower() == ".gguf":  # its tokenizer is rebuilt from the GGUF metadata
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, **folder_kwargs)
    return with_pad_token(tokenizer)


def architecture_name(config) -> str:
    """The causal-LM class transformers builds for `config` (what an in-memory profile
    records as `model.architecture`)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type, type(config).__name__)


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")
