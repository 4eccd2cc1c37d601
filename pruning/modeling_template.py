"""Attention stand-in for attention-pruned EntroDrop checkpoints.

This file is copied verbatim into every `attn` export as `modeling_entrodrop.py`, followed by
a generated subclass of the family's stock causal-LM class. It must import only torch (the
generated part imports transformers) and never the EntroDrop project, so that an export
still loads once the project is uninstalled. The in-memory pruning uses the same class.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class IdentityAttention(nn.Module):
    """A pruned attention sub-block: it adds nothing to the residual stream.

    It returns zeros shaped like its input, plus `None` for the attention weights, because
    every supported decoder layer unpacks `(output, weights)`. Gemma 2/3 normalise the
    attention output before adding it back; RMSNorm(0) = 0, so zeros stay the identity.

    It still appends a one-head, one-dimension zero entry per token to its KV-cache slot:
    the cache reads the sequence length (positions, mask sizes) from a layer's slot, often
    layer 0's, so a slot that never grows would restart the positions at 0.
    """

    def __init__(self, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args, past_key_values=None, **kwargs):
        if past_key_values is not None:
            # GPT-2 style models may wrap the self-attention cache with a cross-attention one.
            cache = getattr(past_key_values, "self_attention_cache", past_key_values)
            heads, dim = _slot_shape(cache, self.layer_idx)
            batch, tokens = hidden_states.shape[0], hidden_states.shape[1]
            marker = hidden_states.new_zeros(batch, heads, tokens, dim)
            cache.update(marker, marker, self.layer_idx)
        return torch.zeros_like(hidden_states), None


def _slot_shape(cache, layer_idx: int) -> tuple[int, int]:
    """(heads, head_dim) to append with: 1 x 1, unless the slot was allocated ahead of time
    with its real shape (a static cache initialised early), which must then be matched."""
    layers = getattr(cache, "layers", None)
    if layers is not None and layer_idx < len(layers):
        keys = getattr(layers[layer_idx], "keys", None)
        if isinstance(keys, torch.Tensor) and keys.dim() == 4:
            return keys.shape[1], keys.shape[3]
    return 1, 1


def replace_attention(model: nn.Module, layers_path: str, attn_name: str,
                      dropped: Iterable[int]) -> None:
    """Swap the attention sub-block of each dropped layer for an `IdentityAttention`."""
    layers = model
    for part in layers_path.split("."):
        layers = getattr(layers, part)
    for i in dropped:
        layer = layers[int(i)]
        original = getattr(layer, attn_name)
        layer_idx = getattr(original, "layer_idx", None)
        setattr(layer, attn_name, IdentityAttention(int(i) if layer_idx is None else layer_idx))
