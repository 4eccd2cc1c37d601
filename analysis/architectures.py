"""The one place that knows model architectures.

Each family maps to where its decoder layers live, what their attention sub-block is
called, where the residual stream right after the attention sub-block can be read, and how
its MLP is laid out (for width pruning). Anything else is an `UnsupportedArchitecture`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from torch import nn

from analysis.errors import EntroDropError


class UnsupportedArchitecture(EntroDropError):
    """The model's family is not in the table; the message names what was found."""


@dataclass(frozen=True)
class MLPLayout:
    """How a layer's MLP is laid out, relative to the decoder layer."""

    inputs: tuple[str, ...]
    """Modules whose *output* rows are the intermediate neurons (gate/up, fc1, c_fc)."""
    output: str
    """The down projection; its input columns are the intermediate neurons."""
    config_key: str
    """Config field holding the intermediate size."""
    fused_gate_up: bool = False
    """Phi-3 stores gate and up stacked in one [2I, D] matrix."""
    conv1d: bool = False
    """GPT-2's Conv1D stores weights as [in, out] instead of [out, in]."""


@dataclass(frozen=True)
class Architecture:
    family: str
    model_types: tuple[str, ...]
    layers_path: str
    """Attribute path from the CausalLM to the ModuleList of decoder layers."""
    attn_name: str
    """Attribute of a decoder layer holding the attention sub-block."""
    attn_residual: tuple[str, Literal["input", "output"]]
    """(module of the layer, which side): the residual right after attention is added back."""
    mlp: MLPLayout
    layer_config_lists: tuple[str, ...] = ()
    """Config fields that hold one entry per layer and must follow layer removal."""

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return _getattr_path(model, self.layers_path)

    def attention(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.attn_name)

    def attn_residual_module(self, layer: nn.Module) -> tuple[nn.Module, str]:
        name, side = self.attn_residual
        return getattr(layer, name), side


_LLAMA_MLP = MLPLayout(("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "intermediate_size")

_TABLE: tuple[Architecture, ...] = (
    Architecture(
        "llama", ("llama", "mistral", "qwen2", "qwen3"), "model.layers", "self_attn",
        ("post_attention_layernorm", "input"), _LLAMA_MLP, ("layer_types",),
    ),
    # Gemma normalises the attention output before adding it back, so the residual is read
    # where the MLP's own pre-norm starts.
    Architecture(
        "gemma", ("gemma2", "gemma3_text", "gemma3"), "model.layers", "self_attn",
        ("pre_feedforward_layernorm", "input"), _LLAMA_MLP, ("layer_types",),
    ),
    Architecture(
        "phi3", ("phi3",), "model.layers", "self_attn",
        ("post_attention_layernorm", "input"),
        MLPLayout(("mlp.gate_up_proj",), "mlp.down_proj", "intermediate_size", fused_gate_up=True),
    ),
    Architecture(
        "gpt2", ("gpt2",), "transformer.h", "attn", ("ln_2", "input"),
        MLPLayout(("mlp.c_fc",), "mlp.c_proj", "n_inner", conv1d=True),
    ),
    Architecture(
        "opt", ("opt",), "model.decoder.layers", "self_attn", ("final_layer_norm", "input"),
        MLPLayout(("fc1",), "fc2", "ffn_dim"),
    ),
)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for a in _TABLE for t in a.model_types)


def get_architecture(model_or_config) -> Architecture:
    """Look up the table entry for a model (or its config)."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if isinstance(model_type, str) and model_type.startswith("entrodrop_"):
        model_type = model_type[len("entrodrop_"):]  # an attention-pruned EntroDrop export
    elif model_type == "nemotron-nas":
        # An attention-pruned EntroDrop export in the vLLM layout records its own family.
        model_type = getattr(config, "entrodrop_model_type", model_type)
    for arch in _TABLE:
        if model_type in arch.model_types:
            if model_type == "opt" and not getattr(config, "do_layer_norm_before", True):
                # OPT-350m normalises after attention: the residual is that norm's output.
                return dataclasses.replace(arch, attn_residual=("self_attn_layer_norm", "output"))
            return arch
    archs = getattr(config, "architectures", None) or [type(model_or_config).__name__]
    raise UnsupportedArchitecture(
        f"unsupported architecture: model_type={model_type!r} ({', '.join(archs)}); "
        f"EntroDrop Studio looks for one of: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )


def num_layers(model: nn.Module) -> int:
    return len(get_architecture(model).layers(model))


def _getattr_path(obj, path: str):
    for part in path.split("."):
        if not hasattr(obj, part):
            raise UnsupportedArchitecture(
                f"unsupported architecture: {type(obj).__name__} has no attribute {part!r} "
                f"(looked for {path!r})"
            )
        obj = getattr(obj, part)
    return obj


def get_submodule(layer: nn.Module, path: str) -> nn.Module:
    return _getattr_path(layer, path)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements the model holds, counting shared storage once."""
    return sum(p.numel() for p in _unique_parameters(model))


def weight_bytes(model: nn.Module) -> int:
    """Bytes of parameter storage, counting shared (tied) weights once."""
    return sum(p.numel() * p.element_size() for p in _unique_parameters(model))


def _unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    # Tied weights may be distinct Parameter objects over one storage, so identity is not
    # enough; meta tensors all have data_ptr 0 and are told apart by identity instead.
    seen: set = set()
    unique = []
    for p in model.parameters():
        ptr = p.data_ptr()
        key = (p.device, ptr, p.dtype, tuple(p.shape)) if ptr else id(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
