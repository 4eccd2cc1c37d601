"""What pruning saves in speed, and what it changes in generated text.

Speed is measured with the base and the pruned model side by side, in interleaved repeats;
a *variant* is a zero-argument factory of a context manager that prunes the model while
entered (see `pruning.evaluate`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from analysis.architectures import count_parameters, weight_bytes
from analysis.settings import SPEED_PROMPT_LEN
from pruning.evaluate import (
    UNPRUNED,
    EvaluationError,
    JsonRecord,
    Variant,
    eval_mode,
    model_device,
    model_max_positions,
    model_vocab_size,
    positive_int,
)


@dataclass(frozen=True)
class Speed(JsonRecord):
    """Base and pruned model measured side by side; each timing is a median over repeats."""

    prefill_tokens_per_s_base: float
    prefill_tokens_per_s_pruned: float
    prefill_ratio: float
    """pruned / base prefill throughput; > 1 means the pruned model is faster."""
    decode_ms_per_token_base: float
    decode_ms_per_token_pruned: float
    decode_ratio: float
    """base / pruned decode latency, i.e. a speed ratio; > 1 means faster."""
    params_base: int
    params_pruned: int
    """Parameter elements, tied weights counted once."""
    weight_bytes_base: int
    weight_bytes_pruned: int
    device: str
    """Where it ran, with the GPU's name on CUDA."""
    repeats: int


def measure_speed(
    model: nn.Module,
    variant: Variant,
    *,
    batch: int = 1,
    prompt_len: int = SPEED_PROMPT_LEN,
    new_tokens: int = 32,
    warmup: int = 1,
    repeats: int = 3,
    vocab_size: int | None = None,
) -> Speed:
    """Prefill throughput and decode latency of the base and the pruned model.

    Prefill: tokens/s of one forward over [batch, prompt_len] random ids. Decode: ms per
    step of a plain greedy loop over the KV cache (one token per sequence per step), timed
    after its own prefill. Base and pruned runs alternate (warm-up rounds discarded), so
    drift of clocks and caches hits both alike; each figure is the median over `repeats`.
    Parameter counts and weight bytes are taken inside and outside the variant's context.
    """
    for name, value in (("batch", batch), ("prompt_len", prompt_len),
                        ("new_tokens", new_tokens), ("repeats", repeats)):
        positive_int(name, value)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise EvaluationError(f"warmup must be an integer >= 0; got {warmup!r}")
    if not callable(variant):
        raise EvaluationError("variant must be a zero-argument callable returning a context manager")
    vocab = vocab_size if vocab_size is not None else model_vocab_size(model)
    positive_int("vocab_size", vocab)
    limit = model_max_positions(model)
    if limit is not None and prompt_len + new_tokens > limit:
        raise EvaluationError(
            f"prompt_len + new_tokens = {prompt_len + new_tokens} exceeds the model's "
            f"{limit} positions; shorten the prompt or generate fewer tokens"
        )

    device = model_device(model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, prompt_len), generator=g).to(device)

    params_base, bytes_base = count_parameters(model), weight_bytes(model)
    with variant():
        params_pruned, bytes_pruned = count_parameters(model), weight_bytes(model)

    timings: dict[str, list[tuple[float, float]]] = {"base": [], "pruned": []}
    with torch.inference_mode(), eval_mode(model):
        for round_idx in range(warmup + repeats):
            base = _time_once(model, ids, new_tokens, device)
            with variant():
                pruned = _time_once(model, ids, new_tokens, device)
            if round_idx >= warmup:
                timings["base"].append(base)
                timings["pruned"].append(pruned)

    prefill_s = {k: statistics.median(t[0] for t in v) for k, v in timings.items()}
    decode_s = {k: statistics.median(t[1] for t in v) for k, v in timings.items()}
    n_prefill = batch * prompt_len
    tps_base, tps_pruned = n_prefill / prefill_s["base"], n_prefill / prefill_s["pruned"]
    ms_base, ms_pruned = 1000.0 * decode_s["base"], 1000.0 * decode_s["pruned"]
    return Speed(
        prefill_tokens_per_s_base=tps_base,
        prefill_tokens_per_s_pruned=tps_pruned,
        prefill_ratio=tps_pruned / tps_base,
        decode_ms_per_token_base=ms_base,
        decode_ms_per_token_pruned=ms_pruned,
        decode_ratio=ms_base / ms_pruned,
        params_base=params_base,
        params_pruned=params_pruned,
        weight_bytes_base=bytes_base,
        weight_bytes_pruned=bytes_pruned,
        device=_describe(device),
        repeats=repeats,
    )


def _time_once(model, ids, new_tokens, device) -> tuple[float, float]:
    """(seconds of one prefill forward, seconds per greedy decode step)."""
    _sync(device)
    t0 = time.perf_counter()
    model(input_ids=ids, use_cache=False)
    _sync(device)
    prefill = time.perf_counter() - t0

    out = model(input_ids=ids, use_cache=True)
    past, token = out.past_key_values, out.logits[:, -1:].argmax(dim=-1)
    del out
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        out = model(input_ids=token, past_key_values=past, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1:].argmax(dim=-1)
    _sync(device)
    return prefill, (time.perf_counter() - t0) / new_tokens


# ---------------------------------------------------------------------------- generation


def generate_side_by_side(
    model: nn.Module,
    tokenizer,
    prompt: str,
    variant: Variant,
    *,
    max_new_tokens: int = 40,
    chat: bool = False,
) -> dict[str, str]:
    """Greedy continuations of one prompt by the unpruned and the pruned model.

    Plain text by default; `chat=True` wraps the prompt as a user turn with the tokenizer's
    chat template. Returns {"unpruned": text, "pruned": text}, new tokens only.
    """
    positive_int("max_new_tokens", max_new_tokens)
    if not isinstance(prompt, str):
        raise EvaluationError(f"prompt must be a string; got {type(prompt).__name__}")
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise EvaluationError(
                "chat=True but the tokenizer has no chat template; use chat=False for plain text"
            )
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[-1] == 0:
        raise EvaluationError("the prompt tokenizes to no tokens; give some text")

    ids = ids.to(model_device(model))
    stop = _eos_ids(model, tokenizer)
    with torch.inference_mode(), eval_mode(model):
        base = _greedy(model, ids, max_new_tokens, stop)
        with variant():
            pruned = _greedy(model, ids, max_new_tokens, stop)
    return {
        UNPRUNED: tokenizer.decode(base, skip_special_tokens=True),
        "pruned": tokenizer.decode(pruned, skip_special_tokens=True),
    }


def _greedy(model, ids: torch.Tensor, max_new_tokens: int, stop: set[int]) -> list[int]:
    """Greedy continuation of one sequence ([1, T]) over the KV cache; new token ids."""
    out = model(input_ids=ids, use_cache=True)
    new: list[int] = []
    while True:
        token = out.logits[:, -1:].argmax(dim=-1)
        new.append(int(token))
        if new[-1] in stop or len(new) >= max_new_tokens:
            return new
        out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    return ids



def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


