"""Loaded models, shared by every caller, and the lock that serialises work on them."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

from analysis.architectures import count_parameters, get_architecture
from analysis.errors import EntroDropError
from analysis.models import (
    LoadedModel,
    describe_devices,
    is_gpu,
    load_model,
    model_identity,
    resolve_device,
    resolve_dtype,
)
from analysis.settings import ModelSettings
from analysis.streaming import (
    LoadPlan,
    architecture_name,
    load_tokenizer,
    open_source,
    plan_load,
    resolve_checkpoint,
)
from analysis.streaming.skeleton import build_skeleton

Progress = Callable[[float, str], None]

MODEL_LOCK = threading.RLock()
"""Held by every service call that runs, prunes in place or reads a shared model. The
dashboard serves several sessions from one process, and block pruning edits the model in
place for a moment, so no two calls may touch a model at once. Only the service takes it."""


class WholeModelNeeded(EntroDropError):
    """An operation that needs the whole model in memory was asked of a streamed model."""


@dataclass(eq=False)
class StreamedModel:
    """A model that is analysed, evaluated and exported one decoder layer at a time and never
    loaded whole: what it holds is the tokenizer, the config and a weightless skeleton."""

    settings: ModelSettings
    tokenizer: object
    config: object
    identity: str
    source_path: str
    device: torch.device
    dtype: torch.dtype

    @property
    def spec(self) -> str:
        return self.settings.spec

    @property
    def architecture(self) -> str:
        return architecture_name(self.config)

    @property
    def on_gpu(self) -> bool:
        return is_gpu(self.device)

    @cached_property
    def skeleton(self) -> torch.nn.Module:
        """The model with its parameters on the meta device: shapes, counts and module
        layout without any weight (block pruning on it costs nothing). Tied embeddings are
        tied, as in a loaded model, so parameter counts match it."""
        model = build_skeleton(self.config, self.dtype)
        model.tie_weights()
        return model

    @property
    def num_layers(self) -> int:
        return len(get_architecture(self.skeleton).layers(self.skeleton))


Model = LoadedModel | StreamedModel
"""What the service works on: a whole model in memory, or a streamed one."""


def torch_model(model: Model) -> torch.nn.Module | None:
    """The in-memory module, or None for a streamed model (e.g. for calibration sources
    that may use the model: `builtin:selfgen` then says it needs one)."""
    return None if isinstance(model, StreamedModel) else model.model


def whole_model(model: Model, what: str) -> LoadedModel:
    """`model` if it is in memory; a streamed model gets a message naming `what` needs it."""
    if isinstance(model, StreamedModel):
        raise WholeModelNeeded(
            f"{what} needs the whole model in memory, and {model.spec} is streamed layer by "
            "layer; choose load 'memory' (CLI: --load memory) if it fits")
    return model


def open_streamed(settings: ModelSettings) -> StreamedModel:
    """The tokenizer and config of a model that will be streamed (no weight is read)."""
    device = resolve_device(settings.device)
    return StreamedModel(settings, load_tokenizer(settings), open_source(settings.spec).config,
                         model_identity(settings.spec), str(resolve_checkpoint(settings.spec)),
                         device, resolve_dtype(settings.dtype, device))


def open_model(settings: ModelSettings, progress: Progress | None = None) -> Model:
    """The model as `settings.load` and the memory estimate decide: loaded whole, or
    prepared for layer streaming."""
    settings.validate()
    if plan_load(settings).mode == "stream":
        return open_streamed(settings)
    return load_model(settings, progress=progress)


class ModelRegistry:
    """Loaded models shared by every dashboard session, loaded at most once each.

    Loading holds a per-settings lock, so two sessions asking for the same model wait for
    one load; other models load in parallel. Only `max_models` stay in memory.
    """

    def __init__(self, max_models: int = 2):
        self.max_models = max_models
        self._models: OrderedDict[ModelSettings, Model] = OrderedDict()
        self._locks: dict[ModelSettings, threading.Lock] = {}
        self._guard = threading.Lock()

    def peek(self, settings: ModelSettings) -> Model | None:
        with self._guard:
            return self._models.get(settings)

    def get(self, settings: ModelSettings, progress: Progress | None = None) -> Model:
        with self._guard:
            lock = self._locks.setdefault(settings, threading.Lock())
        with lock:
            hit = self.peek(settings)
            if hit is not None:
                return hit
            if progress is not None:
                progress(0.01, f"loading {settings.spec} (the first load imports the libraries)")
            loaded = open_model(settings, progress=progress)
            with self._guard:
                self._models[settings] = loaded
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            return loaded

    def clear(self) -> None:
        with self._guard:
            self._models.clear()


def load(settings: ModelSettings, progress: Progress | None = None) -> Model:
    """The model for one caller (the CLI); the dashboard shares them via ModelRegistry."""
    return open_model(settings, progress=progress)


def model_summary(model: Model) -> dict:
    """Architecture, layers, parameters, device, dtype and load mode of a model."""
    with MODEL_LOCK:  # another session may have blocks pruned in place for a moment
        body = model.skeleton if isinstance(model, StreamedModel) else model.model
        return {"architecture": model.architecture, "num_layers": model.num_layers,
                "parameters": count_parameters(body), "device": str(model.device),
                "dtype": str(model.dtype).replace("torch.", ""),
                "load": "stream" if isinstance(model, StreamedModel) else "memory"}


def devices() -> dict:
    """GPU names and free memory, and which device `auto` picks."""
    return describe_devices()


def load_plan(settings: ModelSettings) -> LoadPlan:
    """Whether `settings` run the whole model in memory or stream it layer by layer, with
    the weight and free-memory estimate behind an `auto` choice (nothing is loaded)."""
    return plan_load(settings)
