"""Where streamed weights come from: a checkpoint read one tensor at a time.

A `TensorSource` lists tensors by their Hugging Face names (as `save_pretrained` writes
them), with shapes and dtypes known from the file headers, and reads one tensor on
request. Nothing is read until asked for, and a tensor that is read is the only copy: the
file is never mapped for longer than one read, so pages that were read do not stay in the
process's memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from analysis.errors import EntroDropError


class StreamingError(EntroDropError):
    """A checkpoint cannot be streamed; the message says why and what to do."""


@runtime_checkable
class TensorSource(Protocol):
    """A checkpoint's tensors, readable one at a time.

    `config` is the model's transformers config; `path` is what was opened (for messages).
    """

    config: object
    path: Path

    def names(self) -> list[str]:
        """Every tensor, by its Hugging Face name (e.g. `model.layers.0.mlp.up_proj.weight`)."""
        ...

    def shape(self, name: str) -> tuple[int, ...]:
        ...

    def dtype(self, name: str) -> torch.dtype:
        """The dtype `read` returns (float32 for dequantised GGUF tensors)."""
        ...

    def read(self, name: str) -> torch.Tensor:
        """The tensor on the CPU. It may be backed by the file until it is copied."""
        ...


SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
}
"""The torch dtype of each safetensors dtype code (None where this torch lacks it)."""


def _header(file: Path) -> dict:
    """The JSON header of a .safetensors file (8-byte little-endian length, then JSON)."""
    try:
        with open(file, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size <= 0 or size > 100 * 2**20:
                raise ValueError(f"header length {size} is not plausible")
            header = json.loads(f.read(size))
    except (OSError, ValueError) as e:
        raise StreamingError(
            f"cannot read the safetensors header of {str(file)!r} ({e}); the file is corrupt "
            "or truncated. Download or save the model again.") from e
    header.pop("__metadata__", None)
    return header


def safetensors_entries(folder: Path) -> dict[str, tuple[Path, tuple[int, ...], torch.dtype]]:
    """{name: (file, shape, dtype)} of every tensor in a safetensors folder, from headers."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({folder / f for f in weight_map.values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise StreamingError(
            f"{str(folder)!r} has no .safetensors weights; streaming reads safetensors "
            "folders and GGUF files. Save the model with save_pretrained(..., "
            "safe_serialization=True), or analyse it in memory.")
    entries = {}
    for file in files:
        if not file.is_file():
            raise StreamingError(
                f"the shard {file.name} listed in {index.name} is missing from "
                f"{str(folder)!r}; download the model again.")
        for name, info in _header(file).items():
            dtype = SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                raise StreamingError(
                    f"tensor {name!r} in {file.name} has dtype {info['dtype']}, which "
                    "streaming does not read; save the model in float32, float16 or bfloat16.")
            entries[name] = (file, tuple(info["shape"]), dtype)
    return entries


class SafetensorsSource:
    """A folder of safetensors: one `model.safetensors`, or shards listed in
    `model.safetensors.index.json` (or, without an index, every `*.safetensors` file)."""

    def __init__(self, folder: Path, config=None):
        self.path = Path(folder)
        self.config = config if config is not None else load_folder_config(self.path)
        self._entries = safetensors_entries(self.path)

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> torch.dtype:
        return self._entries[name][2]

    def read(self, name: str) -> torch.Tensor:
        from safetensors import SafetensorError, safe_open

        file = self._entries[name][0]
        # One open per read: pages of a handle kept open stay resident after the tensor
        # that touched them is freed, and over a whole model that is the whole model.
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                return f.get_tensor(name)
        except SafetensorError as e:
            raise StreamingError(
                f"cannot read {name!r} from {str(file)!r} ({e}); the file is corrupt or "
                "truncated. Download or save the model again.") from e


def load_folder_config(folder: Path):
    """The transformers config of a model folder, refusing models that need their own code."""
    from transformers import AutoConfig

    from analysis.architectures import get_architecture

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise StreamingError(f"cannot read the config of {str(folder)!r}: {e}") from e
    get_architecture(config)  # UnsupportedArchitecture names the families we know
    return config


def resolve_checkpoint(spec: str | Path) -> Path:
    """The file or folder a model spec streams from: a demo model's GGUF file, a `.gguf`
    file, a folder, or the local snapshot of a hub id (never downloaded here)."""
    from analysis import models

    r = models.resolve_spec(str(spec))
    if r.kind == "demo":
        return models.demo_gguf_path(r.spec[len("demo:"):])
    if r.kind == "gguf":
        return r.path / r.gguf_file
    if r.kind == "folder":
        return r.path
    return models.hub_snapshot(r.spec)


def open_source(spec: str | Path | TensorSource) -> TensorSource:
    """A `TensorSource` for a model spec, a path, or a source that is already open."""
    if isinstance(spec, TensorSource):
        return spec
    path = resolve_checkpoint(spec)
    if path.suffix.lower() == ".gguf":
        from analysis.streaming.gguf_source import GGUFSource

        return GGUFSource(path)
    return SafetensorsSource(path)


def weight_bytes_of(spec: str | Path, dtype: torch.dtype | None = None) -> int:
    """Bytes the model's weights take in memory, from the file headers only.

    With `dtype`, every floating tensor is counted at that dtype (what an in-memory load
    at that dtype holds); without it, at the dtype a read returns (float32 for GGUF).
    """
    path = resolve_checkpoint(spec)
    if path.suffix.lower() == ".gguf":
        from analysis.streaming.gguf_source import gguf_tensor_shapes

        shapes = {name: (shape, torch.float32) for name, shape in gguf_tensor_shapes(path).items()}
    else:
        shapes = {n: (shape, dt) for n, (_f, shape, dt) in safetensors_entries(path).items()}
    total = 0
    for shape, stored in shapes.values():
        itemsize = (dtype if dtype is not None and stored.is_floating_point else stored).itemsize
        total += itemsize * _numel(shape)
    return total


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
