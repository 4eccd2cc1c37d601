"""The `vllm` layout of an `attn` export: one folder that vLLM and transformers both run.

vLLM has no way to load our own modeling file, but it runs NVIDIA's DeciLM / nemotron-nas
models (`DeciLMForCausalLM`), whose config lists per layer (`block_configs`) whether the
attention sub-block is a no-op. A Llama-style model with some attention sub-blocks pruned
is exactly such a model, so this layout writes it that way:

- config.json: `architectures` ["DeciLMForCausalLM"] (the class vLLM picks),
  `model_type` "nemotron-nas", one `block_configs` entry per layer (attention `no_op`,
  `n_heads_in_group` = query heads per KV head, the MLP's `intermediate_size`: never
  `ffn_mult`, which vLLM rounds up to a multiple of 256), and `auto_map` to the config and
  model classes of `modeling_entrodrop.py`. Stock transformers has no nemotron-nas class, so
  vLLM and transformers both need `trust_remote_code=True`, and loading without it fails
  with an error instead of building a model with random weights.
- weights: the pruned layers' attention and pre-attention norm are left out (vLLM's no-op
  layer has neither).
- block 0: vLLM cannot start with a no-op attention (its first layer has no residual yet),
  so when block 0's attention is pruned it is kept with a zero output projection (weight and
  bias), which adds exactly nothing to the residual stream.

The same folder serves both engines rather than one folder per engine: transformers reads
the same `block_configs` through the config class, so there is one source of truth for
which sub-blocks are gone, and a user ships one artifact. The price is block 0's attention
weights when block 0 is pruned (zero output, but computed). Families other than Llama and
Mistral without sliding windows are refused: vLLM's DeciLM layer is Llama's, and it would
silently skip Qwen2's q/k/v biases or Qwen3's q/k norms.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from analysis.architectures import Architecture
from analysis.errors import EntroDropError
from pruning.attn_export import MODELING_NAME
from pruning.modeling_template import replace_attention

ExportLayout = Literal["transformers", "vllm"]
"""How a block export is laid out. `transformers`: the checkpoint transformers loads (an
`attn` export with `modeling_entrodrop.py` and `trust_remote_code=True`; every family).
`vllm`: for `attn`, the DeciLM / nemotron-nas layout that vLLM runs and transformers also
loads with `trust_remote_code=True` (Llama-style families only). A `layer` export is a
standard checkpoint that both engines load, whichever layout is asked for."""
LAYOUTS: tuple[ExportLayout, ...] = ("transformers", "vllm")
DEFAULT_LAYOUT: ExportLayout = "transformers"

VLLM_MODEL_TYPE = "nemotron-nas"
VLLM_ARCHITECTURE = "DeciLMForCausalLM"
SOURCE_MODEL_TYPE_KEY = "entrodrop_model_type"
"""config.json field holding the source family's model_type (the table lookup of a reloaded
export reads it, since nemotron-nas itself says nothing about the family)."""
VLLM_MODEL_TYPES = ("llama", "mistral")
_ATTN_NORM = "input_layernorm"
_OUT_PROJ = "o_proj"


class LayoutError(EntroDropError):
    """The layout asked for is unknown, or cannot hold this model."""


@dataclass(frozen=True)
class VllmAttnPlan:
    """Which attention sub-blocks the vLLM layout removes and which it keeps at zero."""

    removed: tuple[int, ...]
    """Layers whose attention and pre-attention norm are left out (`no_op` in the config)."""
    zeroed: tuple[int, ...]
    """Layers whose attention is kept with a zero output projection (block 0, if pruned)."""


def check_layout(layout: str) -> ExportLayout:
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown export layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    return layout  # type: ignore[return-value]


def vllm_attn_plan(config, drop: tuple[int, ...]) -> VllmAttnPlan:
    """The plan of an attn export of `drop` in the vLLM layout, or `LayoutError` saying why
    vLLM cannot run this model in it."""
    model_type = getattr(config, "model_type", None)
    if model_type not in VLLM_MODEL_TYPES:
        raise LayoutError(
            f"the vllm layout of attention pruning runs Llama-style models only "
            f"({', '.join(VLLM_MODEL_TYPES)}); this model is {model_type!r}. Export with "
            "layout 'transformers', or prune whole layers (vLLM loads layer exports as they are)")
    if getattr(config, "sliding_window", None):
        raise LayoutError(
            f"this {model_type} model uses sliding-window attention ({config.sliding_window} "
            "tokens), which vLLM's DeciLM layer does not apply; export with layout 'transformers'")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise LayoutError(
            f"vLLM's DeciLM MLP uses SiLU; this model's hidden_act is {config.hidden_act!r}; "
            "export with layout 'transformers'")
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if not kv_heads or heads % kv_heads:
        raise LayoutError(
            f"{heads} query heads do not split evenly over {kv_heads} KV heads, which the "
            "nemotron-nas config cannot express; export with layout 'transformers'")
    return VllmAttnPlan(removed=tuple(b for b in drop if b != 0),
                        zeroed=(0,) if 0 in drop else ())


def block_configs(config, plan: VllmAttnPlan) -> list[dict]:
    """The `block_configs` list: one entry per layer, as vLLM and our config class read it."""
    group = config.num_attention_heads // config.num_key_value_heads
    removed = set(plan.removed)
    return [
        {"attention": {"no_op": i in removed, "replace_with_linear": False,
                       "n_heads_in_group": None if i in removed else group},
         "ffn": {"no_op": False, "replace_with_linear": False,
                 "intermediate_size": config.intermediate_size}}
        for i in range(config.num_hidden_layers)
    ]


def vllm_attn_config(config, arch: Architecture, base: type,
                     plan: VllmAttnPlan) -> Callable[[nn.Module], None]:
    """Point `config` (the export's own copy) at the export's classes and add its
    `block_configs`; returns what the fresh model must do before it takes the weights."""
    config.auto_map = {"AutoConfig": f"{MODELING_NAME[:-3]}.{_config_class(type(config))}",
                       "AutoModelForCausalLM": f"{MODELING_NAME[:-3]}.{_model_class(base)}"}
    config.block_configs = block_configs(config, plan)
    setattr(config, SOURCE_MODEL_TYPE_KEY, config.model_type)

    def prepare(fresh: nn.Module) -> None:
        replace_attention(fresh, arch.layers_path, arch.attn_name, plan.removed,
                          norm_name=_ATTN_NORM)

    return prepare


def removed_names(arch: Architecture, plan: VllmAttnPlan) -> tuple[str, ...]:
    """State-dict name prefixes the layout leaves out (besides the attention weights)."""
    return tuple(f"{arch.layers_path}.{i}.{_ATTN_NORM}." for i in plan.removed)


def zeroed_names(arch: Architecture, plan: VllmAttnPlan) -> tuple[str, ...]:
    """State-dict name prefixes the layout writes as zeros (block 0's output projection)."""
    return tuple(f"{arch.layers_path}.{i}.{arch.attn_name}.{_OUT_PROJ}." for i in plan.zeroed)


def vllm_attn_state(state: Mapping[str, torch.Tensor], arch: Architecture,
                    plan: VllmAttnPlan) -> dict[str, torch.Tensor]:
    """The attn export's state dict (dropped attention already left out) in this layout:
    without the removed layers' pre-attention norms, with zeroed output projections."""
    gone, zero = removed_names(arch, plan), zeroed_names(arch, plan)
    out = {}
    for key, tensor in state.items():
        if key.startswith(gone):
            continue
        out[key] = torch.zeros_like(tensor) if key.startswith(zero) else tensor
    return out


def write_vllm_code(folder: Path, base: type, arch: Architecture, config) -> None:
    """Write `modeling_entrodrop.py` into an export and make its saved config.json the
    nemotron-nas one vLLM reads."""
    (folder / MODELING_NAME).write_text(
        render_vllm_modeling_file(base.__name__, type(config).__name__, arch), encoding="utf-8")
    path = folder / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(architectures=[VLLM_ARCHITECTURE], model_type=VLLM_MODEL_TYPE)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def render_vllm_modeling_file(base_class: str, config_class: str, arch: Architecture) -> str:
    """Source of `modeling_entrodrop.py` in this layout: the stand-in module and block-config
    readers, then a config class that turns `block_configs` into attribute-readable sections
    (what vLLM reads) and a subclass of the stock class that swaps out the no-op blocks."""
    template = (Path(__file__).with_name("modeling_template.py")).read_text(encoding="utf-8")
    cfg_name, cls_name = _config_class_name(config_class), _model_class(base_class)
    return template.rstrip("\n") + f'''


from transformers import {base_class}, {config_class}  # noqa: E402


class {cfg_name}({config_class}):
    """{config_class} under the nemotron-nas model_type, with `block_configs`."""

    model_type = "{VLLM_MODEL_TYPE}"

    def __init__(self, block_configs=None, **kwargs):
        super().__init__(**kwargs)
        self.block_configs = block_sections(block_configs)


class {cls_name}({base_class}):
    """{base_class} whose layers marked `attention.no_op` in `config.block_configs` have
    no attention sub-block and no pre-attention norm (no weights); their MLPs stay."""

    config_class = {cfg_name}

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        replace_attention(self, {arch.layers_path!r}, {arch.attn_name!r},
                          no_op_attention_blocks(config), norm_name={_ATTN_NORM!r})


__all__ = ["{cls_name}", "{cfg_name}", "IdentityAttention"]
'''


def _config_class(config_type: type) -> str:
    return _config_class_name(config_type.__name__)


def _config_class_name(config_class: str) -> str:
    return f"EntroDropDeci{config_class}"


def _model_class(base: type | str) -> str:
    return f"EntroDropDeci{base if isinstance(base, str) else base.__name__}"
