"""What every calibration module shares: the error, the windows, and a source's raw material."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from analysis.errors import EntroDropError


class CalibrationError(EntroDropError):
    """Calibration data cannot be built; the message says what, why and what to do."""


@dataclass(frozen=True, eq=False)
class Calibration:
    """N windows of T token ids. Compare two with `fingerprint()`, not `==`."""

    spec: str
    input_ids: torch.Tensor
    """[N, T] int64 on the CPU."""
    recipe: dict = field(default_factory=dict)
    """JSON-safe description of how the windows were made."""

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2 or self.input_ids.dtype != torch.long:
            raise CalibrationError(
                f"calibration input_ids must be a 2-D int64 tensor [N, T]; got "
                f"{self.input_ids.dtype} of shape {tuple(self.input_ids.shape)}"
            )

    @property
    def samples(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seqlen(self) -> int:
        return int(self.input_ids.shape[1])

    def fingerprint(self) -> str:
        """sha256 hex of the shape and the int64 little-endian token bytes."""
        ids = self.input_ids.detach().to("cpu", torch.long).contiguous()
        h = hashlib.sha256(f"{tuple(ids.shape)}".encode())
        h.update(ids.numpy().astype("<i8", copy=False).tobytes())
        return h.hexdigest()

    def split(self, n_held_out: int) -> tuple[Calibration, Calibration]:
        """(first N - n rows, last n rows). For pre-tokenized files, which have no further
        text to draw held-out windows from."""
        n = self.samples
        if (isinstance(n_held_out, bool) or not isinstance(n_held_out, int)
                or not 0 < n_held_out < n):
            raise CalibrationError(
                f"split needs 0 < n_held_out < N = {n}; got {n_held_out!r}. Keep at least one "
                "window on each side."
            )
        cut = n - n_held_out
        windows = self.recipe.get("windows")
        parts = []
        for role, rows in (("ranking", slice(0, cut)), ("held_out", slice(cut, n))):
            recipe = {**self.recipe, "role": role, "samples": rows.stop - rows.start,
                      "split_rows": [rows.start, rows.stop]}
            if isinstance(windows, list):
                recipe["windows"] = windows[rows]
            parts.append(Calibration(self.spec, self.input_ids[rows].clone(), recipe))
        return parts[0], parts[1]


@dataclass
class Source:
    kind: str
    name: str
    info: dict
    """Recipe entries of the source (file hash, format, column, document count...)."""
    documents: Sequence[str | None] | None = None
    doc_names: Sequence[str] | None = None
    input_ids: torch.Tensor | None = None
    """Pre-tokenized [N, T] ids, used as-is."""


def preview(cal: Calibration, tokenizer, n: int = 3, chars: int = 400) -> list[str]:
    """The first n windows decoded (special tokens shown), each cut to `chars` characters."""
    out = []
    for row in cal.input_ids[: max(0, n)]:
        text = tokenizer.decode(row.tolist(), skip_special_tokens=False)
        out.append(text if len(text) <= chars else text[:chars] + "…")
    return out


def encode(tokenizer, text: str | None) -> list[int]:
    if not text:
        return []
    # Default special tokens, as the research code; verbose=False silences the "longer
    # than the model's maximum length" warning, which does not apply to windows.
    return list(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])


def vocab_size(tokenizer, model) -> int:
    size = len(tokenizer)
    if model is not None:
        emb = model.get_input_embeddings()
        size = min(size, int(emb.weight.shape[0]))
    return size
