"""Calibration specs (`CalibrationSettings.spec`): what each one names, and the list the UI
offers.

- `builtin:licenses`, `builtin:pydocs`: offline prose read from this machine
  (see `analysis.calibration.builtin`).
- `builtin:selfgen`: text that the model itself generates from fixed prompts (data-free).
- `builtin:random`: uniformly random token ids, special tokens excluded (a control).
- `preset:c4|wikitext2|law|medicine`: the research code's corpora, through `datasets`.
- anything else: the path of a file (see `analysis.calibration.files`).
"""

from __future__ import annotations

from analysis.calibration.base import CalibrationError
from analysis.calibration.builtin import BUILTINS
from analysis.calibration.files import FILE_EXTENSIONS
from analysis.calibration.presets import PRESETS


def parse_spec(spec: str) -> tuple[str, str]:
    """(kind, name): ("builtin", name), ("preset", name) or ("file", path)."""
    spec = (spec or "").strip()
    if not spec:
        raise CalibrationError("the calibration spec is empty; use builtin:licenses, "
                               "builtin:pydocs, a preset:<name> or a file path")
    for kind, names, noun in (("builtin", BUILTINS, "builtin source"),
                              ("preset", PRESETS, "preset")):
        prefix = f"{kind}:"
        if spec.startswith(prefix):
            name = spec[len(prefix):].strip()
            if name not in names:
                raise CalibrationError(f"unknown {noun} {spec!r}; available: "
                                       + ", ".join(prefix + n for n in names))
            return kind, name
    return "file", spec


def list_sources() -> list[dict]:
    """Every selectable source, for the UI: name (the spec), kind, description, flags."""
    rows = [
        {"name": f"builtin:{name}", "kind": "builtin", "description": text,
         "needs_model": name == "selfgen", "needs_network": False}
        for name, text in BUILTINS.items()
    ]
    rows += [
        {"name": f"preset:{name}", "kind": "preset",
         "description": f"{p.description}. Needs the Hugging Face hub or a local cache.",
         "needs_model": False, "needs_network": True}
        for name, p in PRESETS.items()
    ]
    rows.append({
        "name": "<path>", "kind": "file", "needs_model": False, "needs_network": False,
        "description": "A local file: .txt, .jsonl/.csv/.parquet with a text column, or "
                       "pre-tokenized .npy [N, T] / .jsonl with input_ids (used as-is).",
        "extensions": list(FILE_EXTENSIONS),
    })
    return rows
