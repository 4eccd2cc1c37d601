"""What a GGUF export holds: the llama.cpp architecture, its per-layer layout, and the
list of tensors to write (planned from the pruned Hugging Face folder without reading any).

Which llama.cpp architecture a file gets:
- Llama-family models (`llama`, `mistral`) with every layer's attention present and one MLP
  width are written as plain `llama`;
- Llama-family models with pruned attention sub-blocks or with MLP widths that differ per
  layer are written as `deci` (llama.cpp's graph for NVIDIA's Nemotron-NAS models), which
  reads `attention.head_count`, `attention.head_count_kv` and `feed_forward_length` as
  per-layer arrays: a layer with 0 heads skips attention (its attention and attention-norm
  tensors are left out). llama.cpp takes the head size from layer 0, so when layer 0's
  attention is pruned it is written as deci's "linear attention" (head_count_kv 0): the
  attention norm and an all-zero output projection, which adds exactly 0 to the residual;
- Gemma 3 is written as `gemma3`, with the per-layer sliding-window pattern as an array (so
  layer-pruned models keep each remaining layer's kind). llama.cpp's Gemma 3 graph has no
  attention-free layer, so pruned attention sub-blocks are written with all-zero q/k/v/o
  projections: the sub-block then adds exactly 0 (its post-attention RMSNorm maps 0 to 0),
  with no saving in size or speed. The manifest records which blocks were written so.

Conventions of llama.cpp that differ from Hugging Face: for `llama`/`deci` the rotary
embedding rotates adjacent pairs of each head's dimensions where Hugging Face rotates the
two halves, so the rows of q_proj and k_proj are reordered within each head (the first
half's rows interleaved with the second half's); Gemma's RMSNorm multiplies by (1 + w) in
Hugging Face and by the stored weight in llama.cpp, so 1 is added to Gemma norm weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from pruning.export_target import ExportError, UnsupportedExportError

GGUFType = Literal["f32", "f16", "bf16", "q8_0"]
"""Storage type of the 2-D weight matrices (1-D norm weights are always f32, as in
llama.cpp's own converter). q8_0 needs rows whose length is a multiple of 32; a matrix
whose rows are not (a width-pruned down projection, say) is stored as f16 instead."""
GGUF_TYPES: tuple[str, ...] = get_args(GGUFType)

LLAMA_FAMILY = ("llama", "mistral")
GEMMA3_TYPES = ("gemma3_text",)


class GGUFExportError(ExportError):
    """A GGUF file cannot be written for this model; the message says why."""


@dataclass
class GGUFLayout:
    """What the file holds per layer, and under which llama.cpp architecture."""

    arch: str
    head_count: list[int]
    head_count_kv: list[int]
    feed_forward_length: list[int]
    linear_attention: list[int] = field(default_factory=list)
    """Layers written as deci 'linear attention' with a zero output projection."""
    zero_attention: list[int] = field(default_factory=list)
    """Layers whose pruned attention is written as zero projections (gemma3)."""
    skipped_attention: list[int] = field(default_factory=list)
    """Layers written without attention (deci head_count 0)."""

    def to_dict(self) -> dict:
        return {"architecture": self.arch, "head_count": self.head_count,
                "head_count_kv": self.head_count_kv,
                "feed_forward_length": self.feed_forward_length,
                "attention_omitted": self.skipped_attention,
                "attention_as_linear_zero": self.linear_attention,
                "attention_as_zero_weights": self.zero_attention}


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the GGUF file: its name, shape, storage and how to make it."""

    name: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    make: Callable[[], np.ndarray]  # float32 array, shape `shape`


# --------------------------------------------------------------------------- the folder


class Checkpoint:
    """The tensors of a safetensors folder, opened lazily (memory-mapped, one at a time)."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = ["model.safetensors"]
        self._handles = {f: safe_open(str(folder / f), framework="pt") for f in files}
        self.where = {name: f for f, h in self._handles.items() for name in h.keys()}

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self.where[name]].get_slice(name).get_shape())

    def read(self, name: str) -> np.ndarray:
        tensor = self._handles[self.where[name]].get_tensor(name)
        return tensor.to(torch.float32).numpy()


def read_config(folder: Path) -> dict:
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if "text_config" in data and "num_hidden_layers" not in data:
        data = {**data["text_config"], "tie_word_embeddings": data.get("tie_word_embeddings")}
    return data


def family_of(config: Mapping) -> str:
    """The model_type of the stock family (attn exports carry `entrodrop_<family>`)."""
    model_type = str(config.get("model_type", ""))
    return model_type.removeprefix("entrodrop_")


def plan_layout(config: Mapping, ckpt: Checkpoint) -> GGUFLayout:
    """The layout of the GGUF file of the pruned folder (see the module docstring)."""
    family = family_of(config)
    if family not in LLAMA_FAMILY + GEMMA3_TYPES:
        raise UnsupportedExportError(
            f"GGUF export supports the Llama family (llama, mistral) and Gemma 3; this model is "
            f"{family!r}. Export it in the Hugging Face format (--format hf) instead")
    n_layers = int(config["num_hidden_layers"])
    heads, kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    prefix = "model.layers."
    has_attn = [f"{prefix}{i}.self_attn.q_proj.weight" in ckpt for i in range(n_layers)]
    ff = [ckpt.shape(f"{prefix}{i}.mlp.down_proj.weight")[1] for i in range(n_layers)]
    if family in GEMMA3_TYPES:
        return GGUFLayout("gemma3", [heads] * n_layers, [kv] * n_layers, ff,
                          zero_attention=[i for i, a in enumerate(has_attn) if not a])
    if all(has_attn) and len(set(ff)) == 1:
        return GGUFLayout("llama", [heads] * n_layers, [kv] * n_layers, ff)
    layout = GGUFLayout("deci", [heads if a else 0 for a in has_attn],
                        [kv if a else 0 for a in has_attn], ff)
    if not has_attn[0]:
        layout.head_count[0] = heads
        layout.linear_attention = [0]
    layout.skipped_attention = [i for i, a in enumerate(has_attn) if not a and i != 0]
    return layout


def permute_rotary_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k projection rows from Hugging Face's half-split rotary layout to
    llama.cpp's adjacent-pair layout: within each head, row j of the first half and row j of
    the second half become rows 2j and 2j+1."""
    rows, cols = weight.shape
    head_dim = rows // n_heads
    return (weight.reshape(n_heads, 2, head_dim // 2, cols)
            .swapaxes(1, 2).reshape(rows, cols))


# --------------------------------------------------------------------------- tensors


_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# Where the MLP's input norm sits: Llama calls it post_attention_layernorm, Gemma 3 has
# pre/post norms around both sub-blocks.
_LLAMA_NORMS = {"post_attention_layernorm": "ffn_norm"}
_GEMMA_NORMS = {"self_attn.q_norm": "attn_q_norm",
                "self_attn.k_norm": "attn_k_norm",
                "post_attention_layernorm": "post_attention_norm",
                "pre_feedforward_layernorm": "ffn_norm",
                "post_feedforward_layernorm": "post_ffw_norm"}


def plan_tensors(config: Mapping, ckpt: Checkpoint, layout: GGUFLayout,
                 gguf_type: GGUFType) -> list[PlannedTensor]:
    """Every tensor of the GGUF file, in file order, without reading any."""
    import gguf

    gemma = layout.arch == "gemma3"
    names = {**_LAYER_NAMES, **(_GEMMA_NORMS if gemma else _LLAMA_NORMS)}
    heads, kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    out: list[PlannedTensor] = []

    def storage(shape: tuple[int, ...]):
        q = gguf.GGMLQuantizationType
        if len(shape) == 1 or gguf_type == "f32":
            return q.F32
        if gguf_type == "q8_0":
            return q.Q8_0 if shape[-1] % 32 == 0 else q.F16
        return q.F16 if gguf_type == "f16" else q.BF16

    def add(name: str, shape: tuple[int, ...], make: Callable[[], np.ndarray]) -> None:
        out.append(PlannedTensor(name, shape, storage(shape), make))

    def from_ckpt(src: str, transform: Callable[[np.ndarray], np.ndarray] | None = None):
        def make() -> np.ndarray:
            arr = ckpt.read(src)
            return transform(arr) if transform is not None else arr
        return make

    def zeros(shape: tuple[int, ...]):
        return lambda: np.zeros(shape, dtype=np.float32)

    plus_one = (lambda a: a + 1.0) if gemma else None
    add("token_embd.weight", ckpt.shape("model.embed_tokens.weight"),
        from_ckpt("model.embed_tokens.weight"))
    for i in range(int(config["num_hidden_layers"])):
        prefix = f"model.layers.{i}."
        for hf_name, gg_name in names.items():
            src = f"{prefix}{hf_name}.weight"
            target = f"blk.{i}.{gg_name}.weight"
            is_attn = hf_name.startswith("self_attn.")
            if i in layout.skipped_attention and (is_attn or hf_name == "input_layernorm"):
                continue
            if i in layout.linear_attention and is_attn:
                if hf_name == "self_attn.o_proj":
                    add(target, (hidden, hidden), zeros((hidden, hidden)))
                continue
            if i in layout.zero_attention and is_attn:
                shape = {"self_attn.q_proj": (heads * head_dim, hidden),
                         "self_attn.k_proj": (kv * head_dim, hidden),
                         "self_attn.v_proj": (kv * head_dim, hidden),
                         "self_attn.o_proj": (hidden, heads * head_dim),
                         "self_attn.q_norm": (head_dim,),
                         "self_attn.k_norm": (head_dim,)}[hf_name]
                add(target, shape, zeros(shape))
                continue
            if src not in ckpt:
                raise GGUFExportError(
                    f"the pruned checkpoint has no {src}; this family's layout is not the one "
                    "the GGUF writer knows")
            transform = None
            if hf_name.endswith("norm") or hf_name.endswith("layernorm"):
                transform = plus_one
            elif not gemma and hf_name == "self_attn.q_proj":
                transform = lambda a: permute_rotary_rows(a, heads)  # noqa: E731
            elif not gemma and hf_name == "self_attn.k_proj":
                transform = lambda a: permute_rotary_rows(a, kv)  # noqa: E731
            add(target, ckpt.shape(src), from_ckpt(src, transform))
    add("output_norm.weight", ckpt.shape("model.norm.weight"),
        from_ckpt("model.norm.weight", plus_one))
    if "lm_head.weight" in ckpt and not config.get("tie_word_embeddings", False):
        add("output.weight", ckpt.shape("lm_head.weight"), from_ckpt("lm_head.weight"))
    for name in ckpt.where:
        if "bias" in name:
            raise GGUFExportError(
                f"the checkpoint has bias tensors ({name}), which the GGUF writer does not carry")
    return out
