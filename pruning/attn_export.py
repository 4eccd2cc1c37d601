"""What an `attn` export adds to the saved checkpoint: `modeling_entrodrop.py` and the
config fields that make `trust_remote_code=True` load it, with the dropped attention
sub-blocks as the identity. The in-memory and the streaming block exports both use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from analysis.architectures import Architecture
from pruning.modeling_template import replace_attention

MODELING_NAME = "modeling_entrodrop.py"
DROPPED_ATTN_KEY = "entrodrop_dropped_attn"
# attn exports carry their own model_type: this prefix + the family's (see architectures.py).
EXPORT_MODEL_TYPE_PREFIX = "entrodrop_"


def attn_config(config, arch: Architecture, base: type,
                drop: tuple[int, ...]) -> Callable[[nn.Module], None]:
    """Point `config` (the export's own copy) at the export's classes and record `drop`;
    returns what the fresh model must do before it takes the weights."""
    cls_name = f"EntroDrop{base.__name__}"
    config_name = f"EntroDrop{type(config).__name__}"
    # Both classes come from the export's own file, and the model_type is the export's own:
    # loading without trust_remote_code then fails loudly instead of quietly building the
    # stock model with random weights for the dropped blocks.
    config.auto_map = {"AutoConfig": f"{MODELING_NAME[:-3]}.{config_name}",
                       "AutoModelForCausalLM": f"{MODELING_NAME[:-3]}.{cls_name}"}
    setattr(config, DROPPED_ATTN_KEY, list(drop))

    def prepare(fresh: nn.Module) -> None:
        replace_attention(fresh, arch.layers_path, arch.attn_name, drop)

    return prepare


def write_attn_code(folder: Path, base: type, arch: Architecture, config) -> None:
    """Write `modeling_entrodrop.py` into an export and point its saved config.json at it."""
    (folder / MODELING_NAME).write_text(
        render_modeling_file(base.__name__, arch, type(config).__name__, config.model_type),
        encoding="utf-8")
    _rewrite_config(folder / "config.json", architectures=[f"EntroDrop{base.__name__}"],
                    model_type=EXPORT_MODEL_TYPE_PREFIX + config.model_type)


def render_modeling_file(base_class: str, arch: Architecture, config_class: str,
                         model_type: str) -> str:
    """Source of `modeling_entrodrop.py`: the stand-in module, then a config class with the
    export's own model_type and a subclass of the stock class that swaps out the attention
    sub-blocks listed in the config."""
    template = (Path(__file__).with_name("modeling_template.py")).read_text(encoding="utf-8")
    cls_name = f"EntroDrop{base_class}"
    cfg_name = f"EntroDrop{config_class}"
    return template.rstrip("\n") + f'''


from transformers import {base_class}, {config_class}  # noqa: E402


class {cfg_name}({config_class}):
    model_type = "{EXPORT_MODEL_TYPE_PREFIX}{model_type}"


class {cls_name}({base_class}):
    """{base_class} whose attention sub-blocks listed in `config.{DROPPED_ATTN_KEY}` are
    the identity (no weights); the MLPs of those layers stay."""

    config_class = {cfg_name}

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        replace_attention(self, {arch.layers_path!r}, {arch.attn_name!r},
                          getattr(config, {DROPPED_ATTN_KEY!r}, []))


__all__ = ["{cls_name}", "{cfg_name}", "IdentityAttention"]
'''


def _rewrite_config(config_path: Path, **fields: Any) -> None:
    data = json.loads(config_path.read_text(encoding="utf-8"))
    data.update(fields)
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
