"""Sources made rather than read: `builtin:random` (uniformly random token ids, special
tokens excluded, a control) and `builtin:selfgen` (text that the model itself generates from
fixed prompts, data-free). Held-out windows are fresh sequences drawn with a seed derived
from the ranking seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from analysis.calibration.base import Calibration, CalibrationError, encode, vocab_size
from analysis.calibration.sources import source_fingerprint
from analysis.settings import CalibrationSettings

SELFGEN_PROMPTS: tuple[str, ...] = (
    "The history of the city begins",
    "In mathematics, a function is",
    "Once upon a time, in a small village,",
    "The following report describes",
    "To install the software, first",
    "Scientists have recently discovered that",
    "Dear members of the committee,",
    "The recipe calls for",
)
SELFGEN_TOP_K = 50
"""Sampling from the top 50 tokens at temperature 1 keeps text fluent but varied."""
SELFGEN_BATCH = 32


def random_windows(settings: CalibrationSettings, tokenizer, model, held_out: int, base: dict):
    vocab = vocab_size(tokenizer, model)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    allowed = torch.tensor([i for i in range(vocab) if i not in special], dtype=torch.long)
    if allowed.numel() == 0:
        raise CalibrationError("builtin:random: the tokenizer has no non-special tokens")
    t = settings.seqlen

    def draw(count: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return allowed[torch.randint(allowed.numel(), (count, t), generator=g)]

    recipe = {**base, "mode": "random", "role": "ranking", "allowed_tokens": int(allowed.numel()),
              "source_fingerprint": source_fingerprint(settings)}
    return _ranking_and_held_out(settings, recipe, held_out, draw)


def selfgen_windows(settings: CalibrationSettings, tokenizer, model, held_out: int, base: dict):
    if model is None:
        raise CalibrationError(
            "builtin:selfgen generates its text with the model being analysed, but no model "
            "was given. Pass model=..., or pick builtin:licenses / builtin:pydocs."
        )
    t = settings.seqlen
    recipe = {**base, "mode": "generated", "role": "ranking", "prompts": list(SELFGEN_PROMPTS),
              "top_k": SELFGEN_TOP_K, "temperature": 1.0,
              "model": str(getattr(getattr(model, "config", None), "_name_or_path", "") or ""),
              "source_fingerprint": source_fingerprint(settings)}
    return _ranking_and_held_out(settings, recipe, held_out,
                                 lambda count, seed: _generate(model, tokenizer, count, t, seed))


def _ranking_and_held_out(settings: CalibrationSettings, recipe: dict, held_out: int,
                          make: Callable[[int, int], torch.Tensor]):
    """`make(count, seed)` rows: N from the seed, and `held_out` fresh ones from a seed
    derived from it (made sources have no text to keep apart, only seeds)."""
    ranking = Calibration(settings.spec, make(settings.samples, settings.seed), recipe)
    if not held_out:
        return ranking, None
    held_seed = _derived_seed(settings.seed, "heldout")
    held = Calibration(settings.spec, make(held_out, held_seed),
                       {**recipe, "role": "held_out", "samples": held_out, "held_out_seed": held_seed})
    return ranking, held


def _generate(model, tokenizer, n: int, t: int, seed: int) -> torch.Tensor:
    """[n, t] continuations (prompt excluded), row r from prompt r mod len(prompts).

    Sampling draws from a CPU generator seeded with `seed`, so the text does not depend
    on the device's random state; special tokens are never sampled.
    """
    generator = torch.Generator().manual_seed(seed)
    vocab = vocab_size(tokenizer, None)
    banned = [i for i in (getattr(tokenizer, "all_special_ids", []) or []) if i < vocab]
    prompts = [encode(tokenizer, p) or _fallback_prompt(tokenizer) for p in SELFGEN_PROMPTS]
    row_prompts = [prompts[r % len(prompts)] for r in range(n)]
    pad_id = next((int(v) for v in (getattr(tokenizer, "pad_token_id", None),
                                    getattr(tokenizer, "eos_token_id", None)) if v is not None), 0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            parts = [
                _sample_continuations(model, row_prompts[b:b + SELFGEN_BATCH], t, generator,
                                      banned, vocab, device, pad_id)
                for b in range(0, n, SELFGEN_BATCH)
            ]
    finally:
        model.train(was_training)
    return torch.cat(parts).to(torch.long)


def _fallback_prompt(tokenizer) -> list[int]:
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return [int(value)]
    raise CalibrationError("builtin:selfgen: the tokenizer encodes the prompts to nothing and "
                           "has no BOS/EOS token to start from")


def _sample_continuations(model, prompts: list[list[int]], length: int,
                          generator: torch.Generator, banned: list[int], vocab: int,
                          device, pad_id: int) -> torch.Tensor:
    """Prompts of different lengths share a batch: left padding, masked out, with explicit
    position ids so that each row starts at position 0 (as `generate` does)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, width - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                position_ids=positions.to(device), use_cache=True)
    new: list[torch.Tensor] = []
    for step in range(length):
        logits = out.logits[:, -1, :vocab].float().cpu()  # ids past the tokenizer can't decode
        if banned:
            logits[:, banned] = float("-inf")
        top, top_idx = logits.topk(min(SELFGEN_TOP_K, logits.shape[-1]), dim=-1)
        choice = torch.multinomial(torch.softmax(top, dim=-1), 1, generator=generator)
        token = top_idx.gather(1, choice)  # [B, 1]
        new.append(token)
        if step + 1 < length:
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = model(input_ids=token.to(device), attention_mask=mask.to(device),
                        position_ids=(mask.sum(-1, keepdim=True) - 1).to(device),
                        past_key_values=out.past_key_values, use_cache=True)
    return torch.cat(new, dim=1)


def _derived_seed(seed: int, role: str) -> int:
    digest = hashlib.sha256(f"entrodrop-{role}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
