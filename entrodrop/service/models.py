"""Loaded models, shared by every caller, and the lock that serialises work on them."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from analysis.architectures import count_parameters
from analysis.models import LoadedModel, describe_devices, load_model
from analysis.settings import ModelSettings
from analysis.streaming import LoadPlan, plan_load

Progress = Callable[[float, str], None]

MODEL_LOCK = threading.RLock()
"""Held by every service call that runs, prunes in place or reads a shared model. The
dashboard serves several sessions from one process, and block pruning edits the model in
place for a moment, so no two calls may touch a model at once. Only the service takes it."""


class ModelRegistry:
    """Loaded models shared by every dashboard session, loaded at most once each.

    Loading holds a per-settings lock, so two sessions asking for the same model wait for
    one load; other models load in parallel. Only `max_models` stay in memory.
    """

    def __init__(self, max_models: int = 2):
        self.max_models = max_models
        self._models: OrderedDict[ModelSettings, LoadedModel] = OrderedDict()
        self._locks: dict[ModelSettings, threading.Lock] = {}
        self._guard = threading.Lock()

    def peek(self, settings: ModelSettings) -> LoadedModel | None:
        with self._guard:
            return self._models.get(settings)

    def get(self, settings: ModelSettings, progress: Progress | None = None) -> LoadedModel:
        with self._guard:
            lock = self._locks.setdefault(settings, threading.Lock())
        with lock:
            hit = self.peek(settings)
            if hit is not None:
                return hit
            if progress is not None:
                progress(0.01, f"loading {settings.spec} (the first load imports the libraries)")
            loaded = load_model(settings, progress=progress)
            with self._guard:
                self._models[settings] = loaded
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            return loaded

    def clear(self) -> None:
        with self._guard:
            self._models.clear()


def load(settings: ModelSettings, progress: Progress | None = None) -> LoadedModel:
    """Load a model for one caller (the CLI); the dashboard shares them via ModelRegistry."""
    return load_model(settings.validate(), progress=progress)


def model_summary(loaded: LoadedModel) -> dict:
    """Architecture, layers, parameters, device and dtype of a loaded model."""
    with MODEL_LOCK:  # another session may have blocks pruned in place for a moment
        return {"architecture": loaded.architecture, "num_layers": loaded.num_layers,
                "parameters": count_parameters(loaded.model),
                "device": str(loaded.device), "dtype": str(loaded.dtype).replace("torch.", "")}


def devices() -> dict:
    """GPU names and free memory, and which device `auto` picks."""
    return describe_devices()


def load_plan(settings: ModelSettings) -> LoadPlan:
    """Whether `settings` run the whole model in memory or stream it layer by layer, with
    the weight and free-memory estimate behind an `auto` choice (nothing is loaded)."""
    return plan_load(settings)
