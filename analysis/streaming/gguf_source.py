"""GGUF files as a `TensorSource`: each tensor dequantised on its own, under its HF name.

The config comes from transformers' own GGUF metadata parser, so a streamed GGUF model has
exactly the config that `analysis.models.convert_gguf` gives the in-memory path. Tensor
names come from the `gguf` package's name tables. Three conventions of llama.cpp's
converter are undone so that the weights equal the ones transformers loads:
- `llama` files store q and k with each head's rows interleaved in rotary pairs (llama.cpp
  rotates adjacent pairs, Hugging Face rotates halves);
- Gemma 2/3 files store RMSNorm weights as 1 + w (Hugging Face adds the 1 at run time);
- GPT-2 files store the Conv1D matrices transposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis.streaming.sources import StreamingError

# GGUF names whose matrices llama.cpp transposes for GPT-2 (HF's Conv1D is [in, out]).
_GPT2_TRANSPOSED = ("attn_qkv.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight")


@dataclass(frozen=True)
class _Stored:
    """Where one tensor's bytes are and how `gguf.quants.dequantize` wants them."""

    qtype: object  # gguf.GGMLQuantizationType
    offset: int
    n_bytes: int
    np_dtype: np.dtype
    np_shape: tuple[int, ...]  # float types: the tensor's shape; quantised: rows x bytes


def _layout(path: Path) -> tuple[str, dict[str, _Stored], dict[str, tuple[int, ...]]]:
    """(architecture, {gguf name: _Stored}, {gguf name: shape}) from the file's header.

    The reader maps the whole file; only offsets and shapes are kept, and the map is
    dropped with the reader, so nothing of the data stays mapped.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # truncated files fail in numpy, not with a gguf error
        raise StreamingError(
            f"cannot read GGUF file {str(path)!r}: it is truncated, corrupt or not a model "
            f"GGUF ({e}). Download or export it again.") from e
    field = reader.fields.get("general.architecture")
    if field is None:
        raise StreamingError(f"GGUF file {str(path)!r} names no architecture; export it again.")
    arch = bytes(field.parts[field.data[0]]).decode()
    stored, shapes = {}, {}
    for t in reader.tensors:
        stored[t.name] = _Stored(t.tensor_type, int(t.data_offset), int(t.n_bytes),
                                 t.data.dtype, tuple(t.data.shape))
        shapes[t.name] = tuple(int(d) for d in reversed(t.shape.tolist()))
    del reader
    return arch, stored, shapes


def gguf_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{gguf name: shape} of every tensor in the file, from its header only."""
    return _layout(Path(path))[2]


class GGUFSource:
    """A GGUF file whose tensors are read, dequantised to float32 and renamed one by one."""

    owns_reads = True
    """Every read is a new array in process memory (no file mapping behind it)."""

    def __init__(self, path: Path):
        import gguf
        from transformers import AutoConfig

        from analysis.architectures import get_architecture
        from analysis.streaming.skeleton import build_skeleton

        self.path = Path(path)
        self.arch, self._stored, _ = _layout(self.path)
        try:
            self.config = AutoConfig.from_pretrained(self.path.parent, gguf_file=self.path.name)
        except Exception as e:
            raise StreamingError(
                f"cannot read the model config in GGUF file {str(self.path)!r} ({e}); "
                "transformers does not know this GGUF architecture or the file is damaged.") from e
        get_architecture(self.config)
        arch_ids = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}
        if self.arch not in arch_ids:
            raise StreamingError(f"the gguf package does not know architecture {self.arch!r}; "
                                 "upgrade it (pip install -U gguf).")
        table = gguf.get_tensor_name_map(arch_ids[self.arch], self.config.num_hidden_layers)
        # The HF names and shapes come from the model transformers builds for this config.
        skeleton = build_skeleton(self.config, torch.float32)
        self._hf: dict[str, tuple[str, tuple[int, ...]]] = {}
        for hf_name, tensor in skeleton.state_dict().items():
            stem, dot, suffix = hf_name.rpartition(".")
            gguf_stem = table.get_name(stem) if dot else None
            if gguf_stem is not None and f"{gguf_stem}.{suffix}" in self._stored:
                self._hf[hf_name] = (f"{gguf_stem}.{suffix}", tuple(tensor.shape))

    def names(self) -> list[str]:
        return list(self._hf)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._hf[name][1]

    def dtype(self, name: str) -> torch.dtype:
        return torch.float32

    def read(self, name: str) -> torch.Tensor:
        from gguf.quants import dequantize

        gguf_name, shape = self._hf[name]
        s = self._stored[gguf_name]
        raw = np.empty(s.n_bytes, dtype=np.uint8)
        # Plain reads, not the reader's map: mapped pages would stay resident.
        with open(self.path, "rb") as f:
            f.seek(s.offset)
            got = f.readinto(raw)
        if got != s.n_bytes:
            raise StreamingError(f"GGUF file {str(self.path)!r} ends inside tensor {gguf_name!r}; "
                                 "it is truncated. Download or export it again.")
        tensor = self._to_hf(gguf_name, torch.from_numpy(_dequantized(raw, s, dequantize)))
        if tuple(tensor.shape) != shape:
            raise StreamingError(
                f"GGUF tensor {gguf_name!r} has shape {tuple(tensor.shape)}, but the model "
                f"expects {shape} for {name!r}; the file does not match its own metadata.")
        return tensor

    def _to_hf(self, gguf_name: str, w: torch.Tensor) -> torch.Tensor:
        """Undo the converter's layout changes (see the module docstring)."""
        if self.arch == "llama" and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
            heads = (self.config.num_attention_heads if ".attn_q." in gguf_name
                     else self.config.num_key_value_heads)
            return _unpermute_rotary(w, heads)
        if self.arch in ("gemma2", "gemma3") and gguf_name.endswith("norm.weight"):
            return w - 1
        if self.arch == "gpt2" and gguf_name.endswith(_GPT2_TRANSPOSED):
            return w.t().contiguous()
        return w


_CHUNK_VALUES = 1 << 24
"""Values dequantised at a time: numpy's dequantisers make several full-size temporaries,
which for a 128k x 4096 embedding would double the peak memory of the whole step."""


def _dequantized(raw: np.ndarray, stored: _Stored, dequantize) -> np.ndarray:
    """The float32 values of one stored tensor, dequantised a block of rows at a time into
    one output array (rows are independent in every GGUF type)."""
    data = raw.view(stored.np_dtype).reshape(stored.np_shape)
    if data.ndim < 2:
        return np.ascontiguousarray(dequantize(data, stored.qtype), np.float32)
    first = np.ascontiguousarray(dequantize(data[:1], stored.qtype), np.float32)
    out = np.empty((data.shape[0], *first.shape[1:]), np.float32)
    step = max(1, _CHUNK_VALUES // max(first.size, 1))
    for start in range(0, data.shape[0], step):
        out[start:start + step] = dequantize(data[start:start + step], stored.qtype)
    return out


def _unpermute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """[heads*d, ...] rows ordered (head, d/2, pair) -> (head, pair, d/2), HF's order.

    llama.cpp wrote row (h, j, p) = HF row (h, p, j): within each head it interleaved the
    two rotary halves; swapping the two inner axes back restores the halves.
    """
    rows = w.shape[0]
    half = rows // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape).contiguous()
