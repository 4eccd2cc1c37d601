"""Running GGUF exports in llama.cpp, through its Python binding `llama_cpp`.

The binding is an optional dependency (`bash scripts/setup.sh --with-engines`, which
`make test` runs): nothing here imports it until it is used, and a missing binding is one
line saying how to install it.

Logits are compared with an f32 KV cache: llama.cpp's default f16 cache rounds keys and
values, which on heavily pruned models moves logits by up to about 1.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.errors import EntroDropError
from analysis.settings import SPEED_PROMPT_LEN
from pruning.speed import Speed

LLAMA_CPP_PIN = "llama-cpp-python==0.3.36"
_GGML_TYPE_F32 = 0


class EngineMissing(EntroDropError):
    """llama.cpp's Python binding is not installed."""


class EngineError(EntroDropError):
    """llama.cpp could not load or run a file; the message says which and why."""


def llama_cpp():
    """The `llama_cpp` module, or EngineMissing with how to install it."""
    try:
        import llama_cpp as module
    except ImportError:
        raise EngineMissing(
            f"llama.cpp's Python binding is not installed: run `bash scripts/setup.sh "
            f"--with-engines` (builds {LLAMA_CPP_PIN} from source once, about 10 minutes on "
            "2 cores)") from None
    return module


def engine_available() -> bool:
    try:
        llama_cpp()
    except EngineMissing:
        return False
    return True


def open_gguf(path: str | os.PathLike, *, n_ctx: int = 512, logits_all: bool = False,
              f32_cache: bool = True, n_threads: int | None = None):
    """A `llama_cpp.Llama` on `path` (quiet, CPU)."""
    module = llama_cpp()
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path} is not a file; give the model.gguf of a GGUF export")
    kwargs = {"type_k": _GGML_TYPE_F32, "type_v": _GGML_TYPE_F32} if f32_cache else {}
    try:
        return module.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=logits_all,
                            n_threads=n_threads or default_threads(), n_batch=n_ctx,
                            verbose=False, **kwargs)
    except (ValueError, RuntimeError) as e:
        raise EngineError(f"llama.cpp cannot load {path}: {e}") from None


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def gguf_logits(path: str | os.PathLike, ids: Sequence[int]) -> np.ndarray:
    """llama.cpp's logits [T, vocab] for every position of one window `ids` (no BOS added),
    float32 KV cache."""
    ids = [int(i) for i in ids]
    llm = open_gguf(path, n_ctx=max(len(ids), 8), logits_all=True)
    try:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _time_once(llm, ids: list[int], new_tokens: int) -> tuple[float, float]:
    """(seconds of one prefill of `ids`, seconds per greedy decode step)."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    return prefill, (time.perf_counter() - t0) / new_tokens


def gguf_size(path: str | os.PathLike) -> tuple[int, int]:
    """(parameter elements, bytes of tensor data) of a GGUF file, from its header."""
    import gguf

    reader = gguf.GGUFReader(path)
    elements = sum(int(t.n_elements) for t in reader.tensors)
    nbytes = sum(int(t.n_bytes) for t in reader.tensors)
    del reader
    return elements, nbytes


def measure_gguf_speed(pruned: str | os.PathLike, base: str | os.PathLike, *,
                       prompt_len: int = SPEED_PROMPT_LEN, new_tokens: int = 32, warmup: int = 1,
                       repeats: int = 3, n_threads: int | None = None,
                       seed: int = 0) -> Speed:
    """Prefill throughput and decode latency of two GGUF files in llama.cpp, side by side.

    Both files are loaded once; each round times the base, then the pruned model (warm-up
    rounds discarded), on the same random prompt; figures are medians over `repeats`, as in
    `pruning.speed.measure_speed`. Parameter counts are the files' tensor elements (zero
    stand-in tensors counted), bytes the files' tensor data."""
    for name, value in (("prompt_len", prompt_len), ("new_tokens", new_tokens),
                        ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EngineError(f"{name} must be a positive integer; got {value!r}")
    threads = n_threads or default_threads()
    models = {k: open_gguf(p, n_ctx=prompt_len + new_tokens + 8, n_threads=threads)
              for k, p in (("base", base), ("pruned", pruned))}
    try:
        vocab = min(m.n_vocab() for m in models.values())
        ids = np.random.default_rng(seed).integers(0, vocab, prompt_len).tolist()
        timings: dict[str, list[tuple[float, float]]] = {"base": [], "pruned": []}
        for round_idx in range(warmup + repeats):
            for key in ("base", "pruned"):
                t = _time_once(models[key], ids, new_tokens)
                if round_idx >= warmup:
                    timings[key].append(t)
    finally:
        for m in models.values():
            m.close()
    prefill = {k: statistics.median(t[0] for t in v) for k, v in timings.items()}
    decode = {k: statistics.median(t[1] for t in v) for k, v in timings.items()}
    (p_base, b_base), (p_pruned, b_pruned) = gguf_size(base), gguf_size(pruned)
    return Speed(
        prefill_tokens_per_s_base=prompt_len / prefill["base"],
        prefill_tokens_per_s_pruned=prompt_len / prefill["pruned"],
        prefill_ratio=prefill["base"] / prefill["pruned"],
        decode_ms_per_token_base=1000.0 * decode["base"],
        decode_ms_per_token_pruned=1000.0 * decode["pruned"],
        decode_ratio=decode["base"] / decode["pruned"],
        params_base=p_base, params_pruned=p_pruned,
        weight_bytes_base=b_base, weight_bytes_pruned=b_pruned,
        device=f"llama.cpp CPU, {threads} threads", repeats=repeats)
