"""Attention stand-in for attention-pruned EntroDrop checkpoints.

This file is copied verbatim into every `attn` export as `modeling_entrodrop.py`, followed by
a generated subclass of the family's stock causal-LM class. It must import only torch (the
generated part imports transformers) and never the EntroDrop project, so that an export
still loads once the project is uninstalled. The in-memory pruning uses the same class.

The `vllm` layout (DeciLM / nemotron-nas `block_configs`, which vLLM runs) also uses the
block-config readers at the end: there the config lists, per layer, whether its attention
is a no-op, and the same list tells transformers which sub-blocks to swap out.
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
                      dropped: Iterable[int], norm_name: str | None = None) -> None:
    """Swap the attention sub-block of each dropped layer for an `IdentityAttention`, and
    its pre-attention norm (`norm_name`, when given) for `nn.Identity`: a layout that stores
    no weights for that norm (vLLM's) must not leave a freshly initialised one behind."""
    layers = model
    for part in layers_path.split("."):
        layers = getattr(layers, part)
    for i in dropped:
        layer = layers[int(i)]
        original = getattr(layer, attn_name)
        layer_idx = getattr(original, "layer_idx", None)
        setattr(layer, attn_name, IdentityAttention(int(i) if layer_idx is None else layer_idx))
        if norm_name is not None:
            setattr(layer, norm_name, nn.Identity())


class ConfigSection(dict):
    """A JSON object of `block_configs` whose keys also read as attributes.

    vLLM reads `config.block_configs[i].attention.no_op` and tests `hasattr(ffn, "ffn_mult")`,
    so a missing key must raise AttributeError; being a dict, it is saved back to
    config.json unchanged and copies and pickles like one.
    """

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def block_sections(block_configs) -> list:
    """`block_configs` as read from config.json (or already converted), as ConfigSections."""
    def section(value):
        if isinstance(value, dict):
            return ConfigSection({k: section(v) for k, v in value.items()})
        return value
    return [section(block) for block in (block_configs or [])]


def no_op_attention_blocks(config) -> list[int]:
    """The layers whose attention is a no-op in `config.block_configs`.

    Refuses (ValueError) what this file does not build: other block kinds, a layer count
    that does not match, or MLP and KV-head sizes that differ from the config's own.
    """
    blocks = block_sections(getattr(config, "block_configs", None))
    if len(blocks) != config.num_hidden_layers:
        raise ValueError(f"block_configs has {len(blocks)} entries for "
                         f"{config.num_hidden_layers} layers")
    group = config.num_attention_heads // config.num_key_value_heads
    dropped = []
    for i, block in enumerate(blocks):
        attention, ffn = block.get("attention", {}), block.get("ffn", {})
        if attention.get("replace_with_linear") or ffn.get("replace_with_linear") \
                or ffn.get("no_op") or "ffn_mult" in ffn:
            raise ValueError(f"block_configs[{i}] uses a block kind this file does not build "
                             f"(linear replacement, no-op or ffn_mult MLP): {dict(block)}")
        if ffn.get("intermediate_size", config.intermediate_size) != config.intermediate_size:
            raise ValueError(f"block_configs[{i}] has an MLP width other than the config's "
                             f"intermediate_size {config.intermediate_size}")
        if attention.get("no_op"):
            dropped.append(i)
        elif attention.get("n_heads_in_group", group) != group:
            raise ValueError(f"block_configs[{i}] groups {attention['n_heads_in_group']} heads "
                             f"per KV head; the config has {group}")
    return dropped
