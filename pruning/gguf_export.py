"""Pruned models as GGUF files that llama.cpp runs.

Every export first writes the pruned model as a Hugging Face folder (the in-memory and the
streaming exports of `pruning.export`, `pruning.width`, `pruning.streaming`: one decision,
one set of tensors), then this module turns that folder into one GGUF file, tensor by
tensor: the safetensors files are memory-mapped and each tensor is read, converted and
appended to the GGUF file before the next one is read, so the conversion holds one tensor
in memory whatever the model size.

What the file holds (architecture, per-layer layout, tensors, and llama.cpp's conventions
that differ from Hugging Face's) is planned in `pruning.gguf_layout`; its metadata keys are
written by `pruning.gguf_metadata`. The public names of both stay importable from here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from analysis.errors import EntroDropError
from pruning.export_record import write_manifest
from pruning.export_target import MANIFEST_NAME, staged_output_dir
from pruning.gguf_layout import (
    GEMMA3_TYPES,
    GGUF_TYPES,
    LLAMA_FAMILY,
    Checkpoint,
    GGUFExportError,
    GGUFLayout,
    GGUFType,
    family_of,
    permute_rotary_rows,
    plan_layout,
    plan_tensors,
    read_config,
)
from pruning.gguf_metadata import (
    add_hf_tokenizer_metadata,
    add_model_metadata,
    copy_tokenizer_metadata,
    file_type,
    gguf_token_type,
)

__all__ = [
    # GGUF exports (this module)
    "EXPORT_FORMATS", "GGUF_FILE", "ExportFormat", "Progress", "check_format",
    "check_gguf_type", "export_as_gguf", "folder_to_gguf", "gguf_model_card",
    "iter_gguf_tensors", "run_snippets", "source_gguf",
    # pruning.gguf_layout
    "GEMMA3_TYPES", "GGUF_TYPES", "LLAMA_FAMILY", "GGUFExportError", "GGUFLayout", "GGUFType",
    "family_of", "permute_rotary_rows", "plan_layout", "plan_tensors", "read_config",
    # pruning.gguf_metadata
    "add_hf_tokenizer_metadata", "add_model_metadata", "copy_tokenizer_metadata",
    "gguf_token_type",
]


ExportFormat = Literal["hf", "gguf"]
"""What an export writes: a Hugging Face folder, or a folder holding one GGUF file."""
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
GGUF_FILE = "model.gguf"

Progress = Callable[[float, str], None]


def check_gguf_type(gguf_type: str) -> GGUFType:
    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(
            f"GGUF type must be one of {', '.join(GGUF_TYPES)}; got {gguf_type!r}")
    return gguf_type  # type: ignore[return-value]


def check_format(fmt: str) -> ExportFormat:
    if fmt not in EXPORT_FORMATS:
        raise GGUFExportError(f"format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
    return fmt  # type: ignore[return-value]


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
    ckpt = Checkpoint(folder)
    layout = plan_layout(config, ckpt)
    tensors = plan_tensors(config, ckpt, layout, gguf_type)

    writer = gguf.GGUFWriter(out_file, layout.arch)
    try:
        add_model_metadata(writer, config, layout, name or folder.name)
        writer.add_file_type(file_type(gguf_type))
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
