"""What an export says about itself: its `entrodrop.json` (made JSON-safe and written) and
the README model card of block and width exports (GGUF exports have their own card in
`pruning.gguf_export`). What goes into the manifest is built by `pruning.manifest`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pruning.attn_export import DROPPED_ATTN_KEY, MODELING_NAME
from pruning.export_target import MANIFEST_NAME, ExportError
from pruning.vllm_layout import DEFAULT_LAYOUT, VLLM_MODEL_TYPE


def write_manifest(folder: Path, record: Mapping[str, Any], model_card: str) -> None:
    """`entrodrop.json` and the README model card of an export being staged in `folder`."""
    (folder / MANIFEST_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(model_card, encoding="utf-8")


def json_ready(value: Any, where: str) -> Any:
    """A JSON-safe copy: numpy/torch scalars and arrays become numbers and lists, paths
    strings; anything else unknown is an error naming where it was found."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [json_ready(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):
        return json_ready(value.tolist(), where)
    raise ExportError(
        f"{where} holds a {type(value).__name__}, which cannot be written to {MANIFEST_NAME}; "
        "pass numbers, strings, lists or dicts"
    )


def block_model_card(name: str, record: Mapping[str, Any]) -> str:
    """The README of a block export, from its manifest `record`."""
    granularity = record["granularity"]
    blocks = ", ".join(map(str, record["blocks"])) or "none"
    source = record.get("source_model") or record.get("model") or record.get("model_name")
    if granularity == "layer":
        what = (f"Decoder layers {blocks} were removed: {record['num_layers_before']} layers "
                f"became {record['num_layers_after']}. The remaining layers are renumbered "
                "from 0.")
        load = (f'model = AutoModelForCausalLM.from_pretrained("{name}")\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{name}")')
        note = "This is a standard checkpoint: stock transformers loads it, no custom code."
        if record.get("layout") == "vllm":
            load += f'\n\n# or in vLLM:\nfrom vllm import LLM\nllm = LLM(model="{name}")'
            note += " vLLM loads it as it is."
    elif record.get("layout") == "vllm":
        removed = ", ".join(map(str, record.get("attn_removed", []))) or "none"
        what = (f"The attention sub-blocks of layers {blocks} (of "
                f"{record['num_layers_before']}) were pruned; the MLPs of those layers stay. "
                "config.json lists every layer in `block_configs` (the DeciLM / "
                f"`{VLLM_MODEL_TYPE}` form that vLLM runs). Attention is a no-op in layers "
                f"{removed}, whose attention and pre-attention norm weights are not stored.")
        if record.get("attn_zeroed"):
            what += (" Block 0's attention is kept with a zero output projection, so it adds "
                     "nothing: vLLM cannot start a model with a no-op attention.")
        load = (f'model = AutoModelForCausalLM.from_pretrained("{name}", '
                'trust_remote_code=True)\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{name}", '
                'trust_remote_code=False)\n\n'
                '# or in vLLM:\nfrom vllm import LLM\n'
                f'llm = LLM(model="{name}", trust_remote_code=True)')
        note = (f"Both engines need `trust_remote_code=True`: transformers takes the model "
                f"class from `{MODELING_NAME}` (in this folder, torch and transformers only), "
                "vLLM takes the config class from it and runs its own `DeciLMForCausalLM`. "
                f"Stock transformers has no `{VLLM_MODEL_TYPE}` class, so loading without it "
                "fails with an error instead of building a model with random weights.")
    else:
        what = (f"The attention sub-blocks of layers {blocks} (of "
                f"{record['num_layers_before']}) were made the identity; the MLPs of those "
                f"layers stay. Their indices are in `config.{DROPPED_ATTN_KEY}`.")
        # Only the model needs the export's code. The tokenizer is stock: without an explicit
        # False, transformers sees the config's auto_map and asks on the terminal.
        load = (f'model = AutoModelForCausalLM.from_pretrained("{name}", '
                'trust_remote_code=True)\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{name}", '
                'trust_remote_code=False)')
        note = (f"Loading needs `trust_remote_code=True`: `{MODELING_NAME}` (in this folder, "
                "torch and transformers only) replaces the dropped attention sub-blocks, "
                "whose weights are not stored. The config's own `model_type` makes loading "
                "without it fail with an error instead of building a broken stock model.")
    lines = [
        f"# {name}", "",
        "Block-pruned with EntroDrop Studio (entropy-based pruning).", "",
    ]
    if source:
        lines += [f"Source model: `{source}`", ""]
    lines += [
        "## What was pruned", "",
        f"- granularity: `{granularity}`",
        f"- layout: `{record.get('layout', DEFAULT_LAYOUT)}`",
        f"- blocks: {blocks}",
        f"- parameters: {record['parameters_before']:,} before, "
        f"{record['parameters_after']:,} after", "",
        what, "",
        "## How to load", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        load,
        "```", "",
        note, "",
    ]
    figures = {k: v for k, v in record.items()
               if k not in _RECORD_KEYS and isinstance(v, (bool, int, float, str))}
    if figures:
        lines += ["## Figures from the manifest", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in figures.items()]
        lines.append("")
    lines += [
        f"Full details: `{MANIFEST_NAME}`. Exported with transformers "
        f"{record['transformers_version']} and torch {record['torch_version']} on "
        f"{record['exported_at']}.", "",
    ]
    return "\n".join(lines)


_RECORD_KEYS = frozenset({
    "granularity", "blocks", "num_layers_before", "num_layers_after", "parameters_before",
    "parameters_after", "transformers_version", "torch_version", "exported_at", "layout",
    "attn_removed", "attn_zeroed",
})


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.6g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def width_model_card(name: str, record: dict) -> str:
    """The README of a width export, from its manifest `record`."""
    width = record["width_pruning"]
    before = sorted(set(width["intermediate_size_before"]))
    source = record.get("source_model") or record.get("model")
    lines = [f"# {name}", "", "MLP width-pruned with EntroDrop Studio.", ""]
    if source:
        lines += [f"Source model: `{source}`", ""]
    if record.get("criterion"):
        lines += [f"Neuron importance: `{record['criterion']}`.", ""]
    lines += [
        f"Every layer keeps its {width['intermediate_size_after']} most important MLP neurons "
        f"(`{width['config_key']}` was {', '.join(map(str, before))}). Parameters: "
        f"{record['parameters_before']:,} before, {record['parameters_after']:,} after.", "",
        "This is a standard checkpoint: stock transformers loads it, no custom code.", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        "```", "",
        f"The kept neuron indices of every layer are in `{MANIFEST_NAME}`.", "",
    ]
    return "\n".join(lines)
