"""A model without weights, and the inputs of its decoder layers taken from its own code.

The skeleton is the real transformers model with every parameter on the meta device (no
memory); non-persistent buffers such as rotary `inv_freq` or Gemma's `embed_scale` are
real, computed by the model's own constructor. Weights are put into modules only for as
long as they are needed (`loaded`) and replaced by the meta originals afterwards.

The extra inputs of every layer (position embeddings, the attention mask of the layer's
type, position ids, ...) are whatever the model's forward passes to it: each decoder layer
is swapped for a stub that records its call, and the model body runs up to the last stub.
Nothing about masks or positions is re-implemented here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from analysis.architectures import get_architecture
from analysis.streaming.sources import StreamingError, TensorSource


def build_skeleton(config, dtype: torch.dtype) -> nn.Module:
    """The causal LM for `config` in eval mode, parameters on meta, buffers real (CPU).

    `dtype` is the default dtype while it is built, as in `from_pretrained(dtype=...)`, so
    buffers created in the default dtype match the in-memory model's.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def layer_param_names(model: nn.Module) -> list[list[str]]:
    """For each decoder layer, the full names of its parameters (`model.layers.3.mlp...`)."""
    arch = get_architecture(model)
    return [[name for name, _ in layer.named_parameters(prefix=f"{arch.layers_path}.{i}")]
            for i, layer in enumerate(arch.layers(model))]


def body_param_names(model: nn.Module) -> list[str]:
    """Parameters of the model body outside the decoder layers: embeddings, positions,
    projections, norms. The LM head is not part of the body and is never loaded."""
    arch = get_architecture(model)
    prefix = model.base_model_prefix
    inside = f"{arch.layers_path}."
    return [name for name, _ in model.base_model.named_parameters(prefix=prefix)
            if not name.startswith(inside)]


def checkpoint_names(model: nn.Module, source: TensorSource, wanted: list[str]) -> dict[str, str]:
    """{model name: source name} for `wanted`, checking shapes.

    Checkpoints saved from the bare body (GPT-2's `h.0...`, OPT's `decoder...`) lack the
    `transformer.`/`model.` prefix that the causal LM's names carry, so both are tried.
    """
    available = set(source.names())
    prefix = model.base_model_prefix + "."
    params = dict(model.named_parameters())
    out, missing = {}, []
    for name in wanted:
        candidates = (name, name[len(prefix):] if name.startswith(prefix) else None, prefix + name)
        found = next((c for c in candidates if c is not None and c in available), None)
        if found is None:
            missing.append(name)
            continue
        expected = tuple(params[name].shape)
        if tuple(source.shape(found)) != expected:
            raise StreamingError(
                f"{found!r} in {str(source.path)!r} has shape {tuple(source.shape(found))}, but "
                f"the config expects {expected}; the weights do not belong to this config.")
        out[name] = found
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise StreamingError(
            f"{str(source.path)!r} lacks weights the model needs: {shown}. The checkpoint is "
            "incomplete or uses names this tool does not know; load it in memory instead.")
    return out


def move_buffers(model: nn.Module, device: torch.device) -> None:
    """Put every real buffer on `device` (parameters stay on meta)."""
    for module in model.modules():
        for key, buf in module._buffers.items():
            if buf is not None and not buf.is_meta:
                module._buffers[key] = buf.to(device)


@contextmanager
def loaded(model: nn.Module, tensors: dict[str, torch.Tensor], device: torch.device) -> Iterator[None]:
    """Put `tensors` ({full parameter name: tensor}) into the model's modules for the
    duration; the meta originals come back on exit, so the real tensors can be freed.

    The dict is emptied as it is consumed, so that the caller holds no second reference
    (on a GPU, the CPU copies are freed as soon as they have been copied over).
    """
    originals: list[tuple[nn.Module, str, nn.Parameter]] = []
    try:
        while tensors:
            name, tensor = tensors.popitem()
            owner_path, _, attr = name.rpartition(".")
            owner = model.get_submodule(owner_path)
            originals.append((owner, attr, owner._parameters[attr]))
            owner._parameters[attr] = nn.Parameter(tensor.to(device), requires_grad=False)
            del tensor
        yield
    finally:
        for owner, attr, original in reversed(originals):
            owner._parameters[attr] = original


class _StopBeforeFinalNorm(Exception):
    """Raised by the last stub: the body's remaining work (final norm) is not needed."""


class _RecordingStub(nn.Module):
    """Stands in for decoder layer `index`: records the call, passes the hidden state on."""

    def __init__(self, index: int, calls: dict[int, tuple[tuple, dict]], first: list, last: bool):
        super().__init__()
        self.index, self.calls, self.first, self.last = index, calls, first, last

    def forward(self, *args, **kwargs):
        if args:
            hidden, args = args[0], args[1:]
        else:
            hidden = kwargs.pop("hidden_states")
        self.calls[self.index] = (args, kwargs)
        if self.index == 0:
            self.first.append(hidden)
        if self.last:
            raise _StopBeforeFinalNorm
        return hidden


@torch.inference_mode()
def record_layer_inputs(model: nn.Module, input_ids: torch.Tensor,
                        device: torch.device) -> tuple[torch.Tensor, list[tuple[tuple, dict]]]:
    """(Z_0 [B, T, D], [(args, kwargs) of layer i for i in 0..L-1]) for one batch [B, T].

    Layer i is later called as `layer(hidden, *args, **kwargs)`, exactly as the model's
    forward would have called it. Needs the body's non-layer weights to be loaded.
    """
    arch = get_architecture(model)
    layers = arch.layers(model)
    originals = list(layers)
    calls: dict[int, tuple[tuple, dict]] = {}
    first: list[torch.Tensor] = []
    try:
        for i in range(len(layers)):
            layers[i] = _RecordingStub(i, calls, first, last=i == len(layers) - 1)
        try:
            model.base_model(input_ids=input_ids.to(device), use_cache=False)
        except _StopBeforeFinalNorm:
            pass
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer
    if len(calls) != len(layers) or not first:
        raise StreamingError(
            f"the {type(model).__name__} forward called {len(calls)} of its {len(layers)} "
            "decoder layers; streaming needs every layer to be called once, in order.")
    return first[0], [calls[i] for i in range(len(layers))]
