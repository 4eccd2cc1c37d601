"""Tiny random models, one per supported family, built with `from_config` (no download)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 128
HIDDEN = 32
LAYERS = 4

_COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
               num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
               max_position_embeddings=256, head_dim=8,
               bos_token_id=1, eos_token_id=2, pad_token_id=0)

_OVERRIDES = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {},
    "gemma2": {"sliding_window": 16, "query_pre_attn_scalar": 8},
    "gemma3_text": {"sliding_window": 16, "query_pre_attn_scalar": 8},
    "phi3": {},
    "gpt2": dict(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_inner=64,
                 n_positions=256, bos_token_id=1, eos_token_id=2),
    "opt": dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                num_attention_heads=4, ffn_dim=64, max_position_embeddings=256,
                word_embed_proj_dim=HIDDEN, pad_token_id=1, bos_token_id=2,
                eos_token_id=2),
}

MODEL_TYPES = tuple(_OVERRIDES)


def tiny_config(model_type: str):
    kwargs = _OVERRIDES[model_type]
    if model_type not in ("gpt2", "opt"):
        kwargs = {**_COMMON, **kwargs}
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type: str, seed: int = 0, dtype=torch.float32):
    """A randomly initialised causal LM of the given family, in eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type), dtype=dtype)
    return model.eval()


def tiny_ids(batch: int = 2, seqlen: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, seqlen), generator=g)


_WORDS = ("the of and to in is was for on that with as by at from it an be this which or are "
          "law court shall state any person right may under act license software work copy "
          "model layer block entropy token data code file text use other").split()


def tiny_tokenizer():
    """A word-level fast tokenizer whose ids fit the tiny models' vocabulary (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + _WORDS)}
    # Fill the rest of the vocabulary with letter pairs so arbitrary text maps to real ids.
    letters = "abcdefghijklmnopqrstuvwxyz"
    for a in letters:
        for b in letters:
            if len(vocab) >= VOCAB:
                break
            vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def save_tiny(model_type: str, folder, seed: int = 0):
    """Save a tiny model + tokenizer as a normal local model folder; returns the folder."""
    from pathlib import Path

    folder = Path(folder)
    tiny_model(model_type, seed=seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def reference_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """The model's own logits [B, T, V] for `ids`, without a KV cache or gradients."""
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def tiny_bpe_tokenizer():
    """A byte-level BPE tokenizer (the kind the writer builds GGUF keys from) with the tiny
    models' vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>"])}
    for ch in "abcdefghijklmnopqrstuvwxyzĠ":
        vocab[ch] = len(vocab)
    merges = []
    for a in "thaeinos":
        for b in "heinrst":
            if len(vocab) < VOCAB:
                vocab[a + b] = len(vocab)
                merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
