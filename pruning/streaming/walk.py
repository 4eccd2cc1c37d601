"""What the streaming pruning paths share: a weightless model, its layers one at a time, and
its tail (final norm + LM head) run through the model's own forward.

- `open_streamed` builds the skeleton (`analysis.streaming.skeleton`: parameters on meta,
  buffers real) with its embeddings tied as in the real model, and maps every decoder
  layer's parameters to checkpoint names.
- `record_inputs` gives, per batch, Z_0 [B, T, D] and the extra inputs of every layer from
  the model's own forward (stubs), with only the body's non-layer weights loaded.
- `walk_layers` materialises the layers in a given order, reading the next one on a
  background thread while the current one computes: at most two layers' weights exist.
- `tail` loads the weights after the last layer (final norm, OPT's `project_out`, the LM
  head, which is the input embedding when tied) and returns a function [B, T, D] ->
  logits [B, T, V] that runs the model's own forward with every layer swapped for a
  stub; the last stub hands over the given hidden state. So whatever a family does after
  its layers (Gemma 2's logit soft-capping, OPT's projection) is transformers' own code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from analysis.architectures import Architecture, get_architecture
from analysis.streaming import engine, skeleton
from analysis.streaming.sources import TensorSource, open_source

Progress = Callable[[float, str], None]
LayerCall = tuple[tuple, dict]
"""(args, kwargs) a decoder layer is called with, besides its hidden state."""


def read_tensors(source: TensorSource, names: dict[str, str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """{model name: tensor} read from `source` as `dtype` (the analysis engine's reader).

    Every path of this package reads through this module attribute, so a test can count
    the tensors alive by replacing it.
    """
    return engine.read_tensors(source, names, dtype)


@dataclass
class StreamedModel:
    """A checkpoint opened for streaming: the skeleton and where its weights are."""

    source: TensorSource
    model: nn.Module
    """The causal LM with parameters on meta; input and output embeddings tied if the
    config ties them."""
    arch: Architecture
    layer_names: list[dict[str, str]]
    """Per decoder layer, {model parameter name: checkpoint name}."""
    device: torch.device
    dtype: torch.dtype

    @property
    def layers(self) -> nn.ModuleList:
        return self.arch.layers(self.model)

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)


def open_streamed(source: str | Path | TensorSource, device: torch.device | str = "cpu",
                  dtype: torch.dtype | str = torch.float32) -> StreamedModel:
    """Open `source` (a model spec, path or `TensorSource`); `device` and `dtype` also take
    the settings' names ("auto", "cuda", "bfloat16", ...)."""
    from analysis.models import resolve_device, resolve_dtype

    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
    src = open_source(source)
    model = skeleton.build_skeleton(src.config, dtype)
    # The skeleton is built untied; tying makes the head and the embedding one meta
    # Parameter, as in a loaded model, so parameter counts and names match it.
    model.tie_weights()
    layer_names = [skeleton.checkpoint_names(model, src, names)
                   for names in skeleton.layer_param_names(model)]
    skeleton.move_buffers(model, device)
    return StreamedModel(src, model, get_architecture(model), layer_names, device, dtype)


def batches_of(ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """[N, T] -> consecutive [B, T] slices (the last may be shorter), as in memory."""
    return [ids[s:s + batch_size] for s in range(0, ids.shape[0], batch_size)]


def record_inputs(sm: StreamedModel, batches: Sequence[torch.Tensor]
                  ) -> tuple[list[torch.Tensor], list[list[LayerCall]]]:
    """([Z_0 of each batch, [B, T, D]], [batch][layer] -> (args, kwargs)).

    Only the body's non-layer weights are loaded meanwhile, and dropped on return. The
    tensors are made outside inference mode (the recorder runs under it), so that they can
    take part in autograd (Taylor scores).
    """
    body = skeleton.checkpoint_names(sm.model, sm.source, skeleton.body_param_names(sm.model))
    hidden, calls = [], []
    with skeleton.loaded(sm.model, read_tensors(sm.source, body, sm.dtype), sm.device):
        for batch in batches:
            z0, layer_calls = skeleton.record_layer_inputs(sm.model, batch, sm.device)
            memo: dict[int, object] = {}
            hidden.append(_normal(z0, memo))
            calls.append([_normal(call, memo) for call in layer_calls])
    return hidden, calls


def _normal(value, memo: dict[int, object]):
    """A copy of `value` whose tensors are ordinary (not inference) tensors. Tensors shared
    between layers (rotary cos/sin, masks) stay shared: `memo` maps id -> copy."""
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = value.clone() if value.is_inference() else value
        return memo[id(value)]
    if isinstance(value, tuple):
        return tuple(_normal(v, memo) for v in value)
    if isinstance(value, list):
        return [_normal(v, memo) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v, memo) for k, v in value.items()}
    return value


def walk_layers(sm: StreamedModel, order: Sequence[int],
                names: Sequence[dict[str, str]] | None = None) -> Iterator[tuple[int, nn.Module]]:
    """Yield (i, layer i with its weights) for i in `order`; the weights go when the next
    one is asked for. `names` (default `sm.layer_names`) may restrict what is read, e.g.
    to the MLP. Layer order[k+1] is read on a background thread while the caller works on
    layer order[k], and only once layer order[k-1] is gone."""
    names = sm.layer_names if names is None else names
    order = list(order)
    if not order:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="entrodrop-prefetch") as pool:
        pending: Future | None = pool.submit(read_tensors, sm.source, names[order[0]], sm.dtype)
        try:
            for k, i in enumerate(order):
                tensors = pending.result()
                pending = None
                with skeleton.loaded(sm.model, tensors, sm.device):
                    if k + 1 < len(order):
                        pending = pool.submit(read_tensors, sm.source, names[order[k + 1]], sm.dtype)
                    yield i, sm.layers[i]
        finally:
            if pending is not None:
                pending.cancel()


# ------------------------------------------------------------------------------- the tail


class _PassThrough(nn.Module):
    """Stands in for a decoder layer: returns its hidden state unchanged."""

    def forward(self, *args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]


class _HandOver(nn.Module):
    """Stands in for the last decoder layer: returns the hidden state set in `value`."""

    def __init__(self):
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, *args, **kwargs):
        return self.value


def tail_param_names(sm: StreamedModel) -> tuple[list[str], bool]:
    """(the parameters the tail needs, whether the head is the tied input embedding).

    Everything outside the decoder layers except the input embedding, which the tail does
    not run (it feeds `inputs_embeds`), unless the head is that same matrix.
    """
    model = sm.model
    embedding = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embedding
    layers_prefix = sm.arch.layers_path + "."
    names = []
    for name, param in model.named_parameters():  # tied parameters are listed once
        if name.startswith(layers_prefix) or (param is embedding and not tied):
            continue
        names.append(name)
    return names, tied


@contextmanager
def tail(sm: StreamedModel) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Load the tail's weights and yield `logits_of(hidden [B, T, D]) -> [B, T, V]`.

    `logits_of` keeps autograd's graph when called under grad mode (Taylor scores need
    dLoss/dhidden). The layers and the weights are put back on exit.
    """
    model = sm.model
    names, tied = tail_param_names(sm)
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    width = embedding.weight.shape[1]
    layers = sm.layers
    originals = list(layers)
    hand_over = _HandOver()
    tensors = read_tensors(sm.source, skeleton.checkpoint_names(model, sm.source, names), sm.dtype)
    meta_head = head._parameters["weight"]
    try:
        with skeleton.loaded(model, tensors, sm.device):
            if tied:
                # Loading replaced the embedding's Parameter only; the head shares it.
                head._parameters["weight"] = embedding._parameters["weight"]
            for i in range(len(layers)):
                layers[i] = hand_over if i == len(layers) - 1 else _PassThrough()

            def logits_of(hidden: torch.Tensor) -> torch.Tensor:
                b, t = hidden.shape[:2]
                # The embedding is not run: its output is replaced at the last layer anyway.
                dummy = torch.zeros(b, t, width, dtype=hidden.dtype, device=hidden.device)
                hand_over.value = hidden
                try:
                    return model(inputs_embeds=dummy, use_cache=False).logits
                finally:
                    hand_over.value = None

            yield logits_of
    finally:
        head._parameters["weight"] = meta_head
        for i, layer in enumerate(originals):
            layers[i] = layer


def report(progress: Progress | None, frac: float, msg: str) -> None:
    if progress is not None:
        progress(min(max(frac, 0.0), 1.0), msg)
