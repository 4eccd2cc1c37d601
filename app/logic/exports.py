"""Exports from the dashboard: the folder they go to, what they wrote, the figures measured
in the app that their manifest records, and how to load them.

The manifest itself is built by the service (`pruning.manifest`), as for the CLI.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from analysis.errors import EntroDropError
from analysis.paths import REPO_ROOT
from app.logic.prune_view import PruneView
from pruning.gguf_export import GGUF_FILE, run_snippets
from pruning.manifest import read_manifest
from pruning.vllm_layout import DEFAULT_LAYOUT

ENV_EXPORT_ROOT = "ENTRODROP_EXPORT_ROOT"


class ExportPathError(EntroDropError):
    """The export folder name is empty, leaves the export root, or is the root itself."""


def export_root(environ: Mapping[str, str] | None = None) -> Path:
    """$ENTRODROP_EXPORT_ROOT, or `exports/` in the repository root."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(ENV_EXPORT_ROOT) or REPO_ROOT / "exports").expanduser().resolve()


def resolve_export_dir(name: str, root: Path) -> Path:
    """The folder an export named `name` goes to, strictly inside `root`.

    A relative name is taken below the root. `..` anywhere is refused, and so is an absolute
    path (or a symlink) that lands outside the root or on the root itself.
    """
    text = (name or "").strip()
    if not text:
        raise ExportPathError("the export folder name is empty; type a name such as my-model-k4")
    candidate = Path(text).expanduser()
    if ".." in candidate.parts:
        raise ExportPathError(
            f"export folder {text!r} contains '..'; give a plain folder name inside {root}"
        )
    root = Path(root).resolve()
    target = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if target == root or root not in target.parents:
        raise ExportPathError(
            f"export folder {text!r} is outside the export root {root}; give a folder name "
            f"inside it (the root is set by ${ENV_EXPORT_ROOT})"
        )
    return target


def block_export_name(model_spec: str, view: PruneView) -> str:
    """The suggested folder name of a block export: model, granularity, criterion and K."""
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", model_spec.split("/")[-1]).strip("-")
    criterion = re.sub(r"[^A-Za-z0-9._-]+", "-", view.criterion)  # random:1 -> random-1
    return f"{model}-{view.granularity}-{criterion}-k{view.k}"


def width_export_name(criterion: str, scale: str, value: float, kept: int) -> str:
    """The suggested folder name of a width export: criterion, the amount kept as the
    slider shows it (`keep0.50` for a fraction, `r1.50` for the paper's ratio x hidden
    size) and the neurons kept per layer."""
    amount = f"keep{value:.2f}" if scale == "fraction" else f"r{value:.2f}"
    return f"width-{criterion}-{amount}-n{kept}"


def follow_suggestion(name: str, last_suggested: str | None, suggested: str) -> str:
    """The export name to show: the first time, the suggestion; after that a name that is
    still the previous suggestion follows the settings (so `-k8` never outlives K = 8), and
    anything the user typed (even a blank, which the export then refuses) stays."""
    if last_suggested is None:
        return name if (name or "").strip() else suggested
    return suggested if name == last_suggested else name


def folder_summary(path: Path) -> dict:
    """What any export (block or width, Hugging Face folder or GGUF file) wrote, for display:
    its folder, files and bytes on disk, and from its manifest the format (with the GGUF
    weight type and llama.cpp architecture), the layout, the parameter counts, and the layer
    count and MLP intermediate size. Those two come from config.json; a GGUF export has
    none, so its manifest supplies them."""
    path = Path(path)
    files = [p for p in path.rglob("*") if p.is_file()]
    record = read_manifest(path) or {}
    config = _text_config(path / "config.json")
    width = record.get("width_pruning") or {}
    gguf = record.get("gguf")
    layers = (config.get("num_hidden_layers") or config.get("n_layer")
              or record.get("num_layers_after"))
    intermediate = (config.get("intermediate_size") or config.get("n_inner")
                    or width.get("intermediate_size_after")
                    or _one_size((gguf or {}).get("feed_forward_length")))
    return {"path": str(path), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "num_layers": layers, "intermediate_size": intermediate,
            "intermediate_size_before": _one_size(width.get("intermediate_size_before")),
            "format": record.get("format", "hf"), "layout": record.get("layout", DEFAULT_LAYOUT),
            "gguf": gguf, "parameters_before": record.get("parameters_before"),
            "parameters_after": record.get("parameters_after")}


def _text_config(path: Path) -> dict:
    """The (text part of the) model config at `path`; empty when there is none to read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        text = data.get("text_config") or data
        return text if isinstance(text, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _one_size(sizes):
    """A per-layer size list as one number when every layer has it, else the list as is."""
    if isinstance(sizes, list) and sizes and len(set(sizes)) == 1:
        return sizes[0]
    return sizes or None


def export_summary(path: Path) -> dict:
    """What a block export wrote, for display: `folder_summary`, and from its manifest the
    granularity, the removed blocks and the layer counts before and after."""
    summary = folder_summary(path)
    record = read_manifest(path) or {}
    summary.update({k: record.get(k) for k in ("granularity", "blocks", "num_layers_before",
                                               "num_layers_after")})
    return summary


def measured_figures(view: PruneView, budget: Mapping | None, speed: Mapping | None,
                     speed_key: str | None) -> dict:
    """The app's measured figures that belong to this prune set: the quality rows at its K
    (from the Budget page's curves) and the speed ratios if they were timed for it."""
    out: dict = {}
    if budget:
        rows = [r for r in budget.get("rows", []) if r.get("k") == view.k]
        if rows:
            out["quality_at_k"] = rows
    if speed and speed_key is not None and speed.get("key") == speed_key:
        out["speed"] = {k: v for k, v in speed.items() if k != "key"}
    return out


FORMAT_LABELS = {"hf": "Hugging Face folder (transformers)", "gguf": "GGUF file (llama.cpp)"}


def gguf_snippets(path: Path | str) -> dict[str, str]:
    """How to run a GGUF export's file: llama.cpp's command line and its Python binding."""
    return run_snippets(str(Path(path) / GGUF_FILE))


LAYOUT_LABELS = {"transformers": "transformers", "vllm": "vLLM and transformers"}
"""The export layouts (`pruning.vllm_layout.ExportLayout`) as the Export page names them."""


def load_snippet(path: Path | str, granularity: str, layout: str = "transformers") -> str:
    """Python that loads an export; attention-pruned exports need their own modeling file.
    A vLLM-layout folder also gets the vLLM lines."""
    trust = ", trust_remote_code=True" if granularity == "attn" else ""
    if layout == "vllm" and granularity == "attn":
        return (
            "# vLLM\n"
            "from vllm import LLM, SamplingParams\n\n"
            f"llm = LLM(model={str(path)!r}, trust_remote_code=True)\n"
            "out = llm.generate(['The capital of France is'], SamplingParams(max_tokens=20))\n"
            "print(out[0].outputs[0].text)\n\n"
            "# transformers\n"
            "from transformers import AutoModelForCausalLM\n\n"
            f"model = AutoModelForCausalLM.from_pretrained({str(path)!r}{trust})\n"
        )
    return (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"path = {str(path)!r}\n"
        f"model = AutoModelForCausalLM.from_pretrained(path{trust})\n"
        "tokenizer = AutoTokenizer.from_pretrained(path)\n"
        "ids = tokenizer('The capital of France is', return_tensors='pt').input_ids\n"
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=20)[0]))\n"
    )
