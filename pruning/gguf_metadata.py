"""The metadata keys of a GGUF export: the architecture keys llama.cpp reads for the
layout (`pruning.gguf_layout`), and the tokenizer keys, copied from the model's own GGUF
source or built from a byte-level BPE `tokenizer.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pruning.export_target import UnsupportedExportError
from pruning.gguf_layout import GGUFExportError, GGUFLayout, GGUFType


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


def file_type(gguf_type: GGUFType) -> int:
    import gguf

    f = gguf.LlamaFileType
    return int({"f32": f.ALL_F32, "f16": f.MOSTLY_F16, "bf16": f.MOSTLY_BF16,
                "q8_0": f.MOSTLY_Q8_0}[gguf_type])
