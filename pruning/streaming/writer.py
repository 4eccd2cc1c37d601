"""Safetensors shards written one tensor at a time.

`safetensors.torch.save_file` needs every tensor of a file in memory at once. Here the
names, shapes and dtypes of all tensors are known before any is read (from the rebuilt
model's meta parameters), so each file's header is written first and each tensor's bytes
are appended as it is produced, then freed: memory holds one tensor, whatever the shard
size.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
{"format": "pt"}} padded with spaces to a multiple of 8 bytes, then the tensors' bytes,
contiguous, in offset order. One file is `model.safetensors`; more are
`model-00001-of-0000N.safetensors` with `model.safetensors.index.json`, as
`save_pretrained` names them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.streaming.sources import SAFETENSORS_DTYPES
from pruning.export_target import ExportError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
_DTYPE_CODES = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items() if dtype is not None}


@dataclass(frozen=True)
class Entry:
    """One tensor to write: its name in the checkpoint, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n * torch.empty((), dtype=self.dtype).element_size()


def plan_shards(entries: Sequence[Entry], max_shard_bytes: int) -> list[list[Entry]]:
    """Consecutive groups of at most `max_shard_bytes` (a larger tensor gets its own).

    Within a group, tensors are ordered by element size, largest first (stable), as the
    safetensors writer does, so every tensor starts at a multiple of its element size.
    """
    shards: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return [sorted(shard, key=lambda e: -e.dtype.itemsize) for shard in shards]


def shard_file_names(count: int) -> list[str]:
    if count == 1:
        return [SINGLE_FILE]
    return [f"model-{k:05d}-of-{count:05d}.safetensors" for k in range(1, count + 1)]


def write_shards(folder: Path, entries: Sequence[Entry], produce: Callable[[str], torch.Tensor],
                 *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, total_parameters: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Write `entries` into `folder`, asking `produce(name)` for each tensor once, in file
    order; returns the file names. The index (when there are several files) records
    `total_size` in bytes and, if given, `total_parameters`, as `save_pretrained` does.
    `progress(done, total)` is called after each tensor.
    """
    unknown = sorted({str(e.dtype) for e in entries if e.dtype not in _DTYPE_CODES})
    if unknown:
        raise ExportError(f"cannot write tensors of dtype {', '.join(unknown)} to safetensors; "
                          "export in float32, float16 or bfloat16")
    shards = plan_shards(entries, max_shard_bytes)
    files = shard_file_names(len(shards))
    done = 0
    for file, shard in zip(files, shards, strict=True):
        with open(folder / file, "wb") as f:
            f.write(_header(shard))
            for entry in shard:
                tensor = produce(entry.name)
                if tuple(tensor.shape) != entry.shape or tensor.dtype != entry.dtype:
                    raise ExportError(
                        f"{entry.name!r} came out as {tuple(tensor.shape)} {tensor.dtype}, but "
                        f"the rebuilt model expects {entry.shape} {entry.dtype}; this family may "
                        "need a table update. Export in memory instead.")
                f.write(_raw_bytes(tensor))
                del tensor
                done += 1
                if progress is not None:
                    progress(done, len(entries))
    if len(files) > 1:
        metadata: dict = {"total_size": sum(e.nbytes for e in entries)}
        if total_parameters is not None:
            metadata["total_parameters"] = total_parameters
        index = {"metadata": metadata,
                 "weight_map": {e.name: file for file, shard in zip(files, shards, strict=True)
                                for e in shard}}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
    return files


def _header(shard: Sequence[Entry]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for entry in shard:
        header[entry.name] = {"dtype": _DTYPE_CODES[entry.dtype], "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data then starts 8-byte aligned
    return len(blob).to_bytes(8, "little") + blob


def _raw_bytes(tensor: torch.Tensor):
    """The tensor's bytes in memory order (little-endian on every platform torch runs on),
    as a buffer that `file.write` takes without another copy."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()
