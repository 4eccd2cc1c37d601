"""Shared by the streaming pruning tests: tiny model folders, the app's tokenizer, gaps."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from analysis.taylor import magnitude_scores
from pruning.width import keep_indices
from tests.tiny_models import HIDDEN, tiny_model, tiny_tokenizer

RTOL = 1e-5


def save_source(model_type: str, folder: Path, sharded: bool = False, seed: int = 1) -> Path:
    """A tiny model folder (weights + tokenizer); `sharded` puts a few tensors per file."""
    folder = Path(folder)
    tiny_model(model_type, seed=seed).save_pretrained(
        folder, max_shard_size="20KB" if sharded else "50GB")
    assert (folder / "model.safetensors.index.json").is_file() == sharded
    tiny_tokenizer().save_pretrained(folder)
    return folder


def load_in_memory(folder: Path):
    """The model as the app loads it for the in-memory path (float32, eval)."""
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def app_tokenizer(folder: Path):
    """The tokenizer as `analysis.models.load_model` loads it (pad falls back to eos)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def width_keep(model, ratio: float = 0.75) -> list[torch.Tensor]:
    """Kept neurons per layer from the magnitude scores (deterministic, no data)."""
    return keep_indices(magnitude_scores(model), ratio, hidden_size=HIDDEN)


def relative_gap(a: float | None, b: float | None) -> float:
    """|a - b| / |b| (0 when both are 0 or both None; inf when only one is None)."""
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(b), 1e-30)


def quality_gap(streamed: dict, in_memory: dict) -> float:
    """The largest relative gap over every variant's perplexity, KL and top-1."""
    assert set(streamed) == set(in_memory)
    return max(relative_gap(getattr(streamed[name], field), getattr(in_memory[name], field))
               for name in in_memory for field in ("perplexity", "kl", "top1"))
