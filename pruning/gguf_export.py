"""Pruned models as GGUF files that llama.cpp runs.

Every export first writes the pruned model as a Hugging Face folder (the in-memory and the
streaming exports of `pruning.export`, `pruning.width`, `pruning.streaming`: one decision,
one set of tensors), then this module turns that folder into one GGUF file, tensor by
tensor: the safetensors files are memory-mapped and each tensor is read, converted and
appended to the GGUF file before the next one is read, so the conversion holds one tensor
in memory whatever the model size.

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
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from analysis.errors import EntroDropError
from pruning.export import ExportError, UnsupportedExportError

GGUFType = Literal["f32", "f16", "bf16", "q8_0"]
"""Storage type of the 2-D weight matrices (1-D norm weights are always f32, as in
llama.cpp's own converter). q8_0 needs rows whose length is a multiple of 32; a matrix
whose rows are not (a width-pruned down projection, say) is stored as f16 instead."""
GGUF_TYPES: tuple[str, ...] = get_args(GGUFType)
ExportFormat = Literal["hf", "gguf"]
"""What an export writes: a Hugging Face folder, or a folder holding one GGUF file."""
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
GGUF_FILE = "model.gguf"

LLAMA_FAMILY = ("llama", "mistral")
GEMMA3_TYPES = ("gemma3_text",)
Progress = Callable[[float, str], None]


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
class _Out:
    """One tensor of the GGUF file: its name, shape, storage and how to make it."""

    name: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    make: Callable[[], np.ndarray]  # float32 array, shape `shape`


def check_gguf_type(gguf_type: str) -> GGUFType:
    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(
            f"GGUF type must be one of {', '.join(GGUF_TYPES)}; got {gguf_type!r}")
    return gguf_type  # type: ignore[return-value]


def check_format(fmt: str) -> ExportFormat:
    if fmt not in EXPORT_FORMATS:
        raise GGUFExportError(f"format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
    return fmt  # type: ignore[return-value]


# --------------------------------------------------------------------------- the folder


class _Checkpoint:
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


def plan_layout(config: Mapping, ckpt: _Checkpoint) -> GGUFLayout:
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


def plan_tensors(config: Mapping, ckpt: _Checkpoint, layout: GGUFLayout,
                 gguf_type: GGUFType) -> list[_Out]:
    """Every tensor of the GGUF file, in file order, without reading any."""
    import gguf

    gemma = layout.arch == "gemma3"
    names = {**_LAYER_NAMES, **(_GEMMA_NORMS if gemma else _LLAMA_NORMS)}
    heads, kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    out: list[_Out] = []

    def storage(shape: tuple[int, ...]):
        q = gguf.GGMLQuantizationType
        if len(shape) == 1 or gguf_type == "f32":
            return q.F32
        if gguf_type == "q8_0":
            return q.Q8_0 if shape[-1] % 32 == 0 else q.F16
        return q.F16 if gguf_type == "f16" else q.BF16

    def add(name: str, shape: tuple[int, ...], make: Callable[[], np.ndarray]) -> None:
        out.append(_Out(name, shape, storage(shape), make))

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


# --------------------------------------------------------------------------- metadata


def _rope_theta(config: Mapping, kind: str | None = None) -> float:
    params = config.get("rope_parameters") or {}
    if kind is not None and isinstance(params.get(kind), Mapping):
        params = params[kind]
    scaling = params.get("rope_type", "default") if isinstance(params, Mapping) else "default"
    if scaling not in ("default", None):
        raise UnsupportedExportError(
            f"rope scaling {scaling!r} is not written by the GGUF exporter yet; export in the "
            "Hugging Face format (--format hf) instead")
    theta = params.get("rope_theta") if isinstance(params, Mapping) else None
    return float(theta or config.get("rope_theta") or 10000.0)


def add_model_metadata(writer, config: Mapping, layout: GGUFLayout, name: str) -> None:
    """The architecture keys llama.cpp reads for `layout.arch`."""
    arch = layout.arch
    n_layers = int(config["num_hidden_layers"])
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layers)
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if arch == "deci":
        writer.add_head_count(layout.head_count)
        writer.add_head_count_kv(layout.head_count_kv)
        writer.add_feed_forward_length(layout.feed_forward_length)
    else:
        writer.add_head_count(layout.head_count[0])
        writer.add_head_count_kv(layout.head_count_kv[0])
        writer.add_feed_forward_length(layout.feed_forward_length[0])
    if arch == "gemma3":
        writer.add_rope_freq_base(_rope_theta(config, "full_attention"))
        writer.add_float32(f"{arch}.rope.freq_base_swa", _rope_theta(config, "sliding_attention"))
        writer.add_sliding_window(int(config["sliding_window"]))
        kinds = config.get("layer_types") or []
        if len(kinds) != n_layers:
            raise GGUFExportError("the Gemma 3 config has no layer_types for every layer")
        writer.add_array(f"{arch}.attention.sliding_window_pattern",
                         [k == "sliding_attention" for k in kinds])
        if config.get("final_logit_softcapping"):
            writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
    else:
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_vocab_size(int(config["vocab_size"]))


def copy_tokenizer_metadata(writer, source_gguf: Path) -> int:
    """Copy every `tokenizer.*` key of `source_gguf` (the file the model was loaded from);
    returns how many keys were copied."""
    import gguf

    reader = gguf.GGUFReader(source_gguf)
    count = 0
    for key, fld in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = fld.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, fld.contents(), vtype, sub_type=fld.types[-1])
        else:
            writer.add_key_value(key, fld.contents(), vtype)
        count += 1
    del reader
    return count


def add_hf_tokenizer_metadata(writer, folder: Path, config: Mapping) -> None:
    """Tokenizer keys built from a byte-level BPE `tokenizer.json` (GPT-2 style, as Llama-3,
    SmolLM and Mistral-Nemo use). llama.cpp picks its pre-tokenizer by name; the generic
    'default' one is written, which splits text like GPT-2."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise GGUFExportError(
            f"{folder} has no tokenizer.json, so the GGUF file would have no tokenizer; "
            "export in the Hugging Face format (--format hf) instead")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise GGUFExportError(
            "the model's tokenizer is not a byte-level BPE one, which is the only kind the GGUF "
            "exporter builds from a Hugging Face folder; export from a GGUF source or in the "
            "Hugging Face format (--format hf)")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    for tid, tok in added.items():
        vocab.setdefault(tok["content"], tid)
    size = max(int(config.get("vocab_size") or 0), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf_token_type("unused")] * size
    for text, tid in vocab.items():
        tokens[tid] = text
        types[tid] = gguf_token_type("normal")
    for tid, tok in added.items():
        types[tid] = gguf_token_type("control" if tok.get("special") else "user")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, adder in (("bos_token_id", writer.add_bos_token_id),
                       ("eos_token_id", writer.add_eos_token_id),
                       ("pad_token_id", writer.add_pad_token_id)):
        value = config.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            adder(value)
    template = folder / "chat_template.jinja"
    if template.is_file():
        writer.add_chat_template(template.read_text(encoding="utf-8"))


def gguf_token_type(kind: str) -> int:
    import gguf

    return int({"normal": gguf.TokenType.NORMAL, "control": gguf.TokenType.CONTROL,
                "user": gguf.TokenType.USER_DEFINED, "unused": gguf.TokenType.UNUSED}[kind])


# --------------------------------------------------------------------------- writing


def _stored(arr: np.ndarray, qtype) -> np.ndarray:
    import gguf

    q = gguf.GGMLQuantizationType
    if qtype == q.F32:
        return np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == q.F16:
        return np.ascontiguousarray(arr, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), qtype)


def _nbytes(shape: tuple[int, ...], qtype) -> int:
    import gguf

    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    return n // block * type_size


def _file_type(gguf_type: GGUFType) -> int:
    import gguf

    f = gguf.LlamaFileType
    return int({"f32": f.ALL_F32, "f16": f.MOSTLY_F16, "bf16": f.MOSTLY_BF16,
                "q8_0": f.MOSTLY_Q8_0}[gguf_type])


def folder_to_gguf(folder: str | os.PathLike, out_file: str | os.PathLike, *,
                   gguf_type: GGUFType = "f16", tokenizer_gguf: str | os.PathLike | None = None,
                   name: str | None = None, progress: Progress | None = None) -> dict:
    """Write the Hugging Face checkpoint in `folder` (a pruned export) as the GGUF file
    `out_file`, one tensor at a time. Tokenizer keys are copied from `tokenizer_gguf` when
    given (the model's own GGUF source), else built from the folder's tokenizer.json.
    Returns what the manifest records (architecture, per-layer layout, types, tensors)."""
    import gguf

    gguf_type = check_gguf_type(gguf_type)
    folder, out_file = Path(folder), Path(out_file)
    report = progress or (lambda frac, msg: None)
    config = read_config(folder)
    ckpt = _Checkpoint(folder)
    layout = plan_layout(config, ckpt)
    tensors = plan_tensors(config, ckpt, layout, gguf_type)

    writer = gguf.GGUFWriter(out_file, layout.arch)
    try:
        add_model_metadata(writer, config, layout, name or folder.name)
        writer.add_file_type(_file_type(gguf_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if tokenizer_gguf is not None:
            copy_tokenizer_metadata(writer, Path(tokenizer_gguf))
        else:
            add_hf_tokenizer_metadata(writer, folder, config)
        for t in tensors:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32),
                                   _nbytes(t.shape, t.qtype), raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, t in enumerate(tensors, 1):
            arr = t.make()
            if tuple(arr.shape) != t.shape:
                raise GGUFExportError(f"{t.name} came out as {arr.shape}, expected {t.shape}")
            data = _stored(arr, t.qtype)
            del arr
            writer.write_tensor_data(data)
            del data
            report(done / len(tensors), f"wrote {done} of {len(tensors)} GGUF tensors")
    finally:
        writer.close()
    counts: dict[str, int] = {}
    for t in tensors:
        counts[t.qtype.name.lower()] = counts.get(t.qtype.name.lower(), 0) + 1
    return {"gguf_type": gguf_type, "file": out_file.name, "tensor_types": counts,
            "tokenizer_from": "gguf source" if tokenizer_gguf is not None else "tokenizer.json",
            **layout.to_dict()}


def iter_gguf_tensors(path: str | os.PathLike) -> Iterator[tuple[str, tuple[int, ...], str]]:
    """(name, shape in Hugging Face order, type name) of every tensor of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        yield t.name, tuple(int(d) for d in reversed(t.shape.tolist())), t.tensor_type.name.lower()


# --------------------------------------------------------------------------- exports


def source_gguf(spec: str) -> Path | None:
    """The GGUF file a model spec was loaded from (demo models and .gguf specs), whose
    tokenizer keys a GGUF export copies; None for Hugging Face folders and hub ids."""
    from analysis.models import demo_gguf_path, resolve_spec

    try:
        r = resolve_spec(spec)
    except EntroDropError:  # a spec that resolves to nothing local has no GGUF source
        return None
    if r.kind == "demo":
        return demo_gguf_path(r.spec[len("demo:"):])
    if r.kind == "gguf" and r.gguf_file:
        return Path(r.path) / r.gguf_file
    return None


def export_as_gguf(write_hf: Callable[[Path], Any], out_dir: str | os.PathLike, *,
                   gguf_type: GGUFType = "f16", tokenizer_gguf: str | os.PathLike | None = None,
                   overwrite: bool = False, progress: Progress | None = None) -> Path:
    """An export folder holding `model.gguf`, `entrodrop.json` and a README.

    `write_hf(folder)` writes the pruned model as a Hugging Face export into `folder` (the
    same function, decision and manifest as a `--format hf` export); it is written inside
    the staged target, converted tensor by tensor, and deleted. The folder appears
    complete or not at all, and an existing export is replaced only with `overwrite`."""
    from pruning.export import MANIFEST_NAME, staged_output_dir, write_manifest

    gguf_type = check_gguf_type(gguf_type)
    report = progress or (lambda frac, msg: None)
    out_dir = Path(out_dir)
    with staged_output_dir(out_dir, overwrite=overwrite) as tmp:
        hf = tmp / "hf-checkpoint"
        write_hf(hf)
        record = json.loads((hf / MANIFEST_NAME).read_text(encoding="utf-8"))
        report(0.6, f"writing {GGUF_FILE} ({gguf_type})")
        info = folder_to_gguf(
            hf, tmp / GGUF_FILE, gguf_type=gguf_type, tokenizer_gguf=tokenizer_gguf,
            name=out_dir.name,
            progress=lambda f, m: report(0.6 + 0.35 * f, m))
        shutil.rmtree(hf)
        record.update({"format": "gguf", "gguf": info})
        write_manifest(tmp, record, gguf_model_card(out_dir.name, record))
    report(1.0, f"exported to {out_dir}")
    return out_dir


def run_snippets(gguf_path: str) -> dict[str, str]:
    """How to run a GGUF export: llama.cpp's command line and its Python binding (with the
    f32 KV cache the comparisons here use)."""
    return {
        "llama-cli": f'llama-cli -m {gguf_path} -p "The capital of France is" -n 32',
        "python": (
            "from llama_cpp import Llama\n\n"
            f'llm = Llama(model_path="{gguf_path}", n_ctx=2048)\n'
            'out = llm("The capital of France is", max_tokens=32)\n'
            'print(out["choices"][0]["text"])'),
    }


def gguf_model_card(name: str, record: Mapping[str, Any]) -> str:
    """The README of a GGUF export, from its manifest `record`."""
    g = record["gguf"]
    what = record.get("granularity") or record.get("method", "")
    blocks = record.get("blocks")
    snippets = run_snippets(f"{name}/{GGUF_FILE}")
    lines = [f"# {name}", "", "Pruned with EntroDrop Studio, as a GGUF file for llama.cpp.", ""]
    if record.get("source_model"):
        lines += [f"Source model: `{record['source_model']}`", ""]
    lines += [
        f"- pruning: `{what}`" + (f", blocks {', '.join(map(str, blocks))}" if blocks else ""),
        f"- llama.cpp architecture: `{g['architecture']}`; weights `{g['gguf_type']}`",
        f"- parameters: {record.get('parameters_before', 0):,} before, "
        f"{record.get('parameters_after', 0):,} after", "",
    ]
    if g["architecture"] == "deci":
        lines += ["The per-layer head counts and MLP widths are arrays (llama.cpp's `deci` "
                  "graph); layers with 0 attention heads skip attention.", ""]
    if g.get("attention_as_zero_weights"):
        lines += ["Pruned attention sub-blocks are stored as all-zero projections (llama.cpp's "
                  "Gemma 3 graph cannot skip them): exact, but no smaller or faster.", ""]
    lines += ["## Run", "", "```bash", snippets["llama-cli"], "```", "",
              "```python", snippets["python"], "```", "",
              "Full details: `entrodrop.json`.", ""]
    return "\n".join(lines)
