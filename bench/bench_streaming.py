"""Benchmark: layer-streaming analysis of a Llama-3.1-8B-shaped checkpoint on the CPU.

Run: .venv/bin/python bench/bench_streaming.py [--layers 32] [--samples 8] [--seqlen 128]

1. Writes a checkpoint with Llama-3.1-8B's real config (hidden 4096, 32 layers, 32 heads,
   8 KV heads, intermediate 14336, vocab 128256, rope theta 500000 with llama3 scaling)
   and random bf16 weights, as sharded safetensors, one shard per layer, never holding
   more than one shard in memory. It goes to `cache/bench/` (or `--dir`) and is deleted at
   the end unless `--keep`; an existing complete checkpoint is reused. `--layers` cuts the
   depth for a quick check (about 0.44 GB of disk per layer plus 2.1 GB of embeddings
   and head).
2. Analyses it with `stream_capture` in a fresh subprocess, so that the peak RSS is the
   analysis's own: N windows of T random tokens, float32 on the CPU.
3. Reports peak RSS (target: under 4 GB for the full model on a 24 GB machine), total
   time, bytes read per layer and read throughput, and the time spent inside the decoder
   layers' forward passes (the bare forward, measured by hooks around each layer call)
   against the total.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB = 4096, 14336, 32, 8, 128256
HEAD_DIM = HIDDEN // HEADS
DONE_MARKER = "bench-complete.json"


def llama31_8b_config(layers: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
        num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=131072, rms_norm_eps=1e-5, hidden_act="silu",
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001,
        attention_bias=False, mlp_bias=False, dtype="bfloat16",
    )


def _layer_shapes(i: int) -> dict[str, tuple[int, ...]]:
    p = f"model.layers.{i}."
    return {
        p + "self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
        p + "self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
        p + "self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
        p + "self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
        p + "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
        p + "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
        p + "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
        p + "input_layernorm.weight": (HIDDEN,),
        p + "post_attention_layernorm.weight": (HIDDEN,),
    }


def _shards(layers: int) -> list[dict[str, tuple[int, ...]]]:
    """Shard contents: embeddings, one shard per layer, then the final norm and the head."""
    return ([{"model.embed_tokens.weight": (VOCAB, HIDDEN)}]
            + [_layer_shapes(i) for i in range(layers)]
            + [{"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}])


def checkpoint_bytes(layers: int) -> int:
    return sum(2 * _numel(s) for shard in _shards(layers) for s in shard.values())


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def write_checkpoint(folder: Path, layers: int, seed: int = 0) -> None:
    """Random bf16 weights (normal, std 0.02; norms near 1), one shard in memory at a time."""
    import torch
    from safetensors.torch import save_file

    if (folder / DONE_MARKER).is_file():
        print(f"reusing {folder}")
        return
    need = checkpoint_bytes(layers)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need * 1.05:
        sys.exit(f"not enough disk: the checkpoint needs {need / 2**30:.1f} GiB, "
                 f"{free / 2**30:.1f} GiB are free in {folder}")
    gen = torch.Generator().manual_seed(seed)
    shards = _shards(layers)
    weight_map = {}
    started = time.perf_counter()
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard.items():
            t = torch.empty(shape, dtype=torch.bfloat16)
            if name.endswith("norm.weight"):
                t.normal_(1.0, 0.05, generator=gen)
            else:
                t.normal_(0.0, 0.02, generator=gen)
            tensors[name] = t
            weight_map[name] = file
        save_file(tensors, folder / file, metadata={"format": "pt"})
        del tensors
        print(f"  wrote {file} ({k + 1}/{len(shards)}, {time.perf_counter() - started:.0f} s)",
              flush=True)
    index = {"metadata": {"total_size": need}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    llama31_8b_config(layers).save_pretrained(folder)
    (folder / DONE_MARKER).write_text(json.dumps({"layers": layers, "bytes": need}))


def analyse(folder: Path, samples: int, seqlen: int, batch_size: int, dtype_name: str) -> dict:
    """The streaming analysis with timers around reads, layer forwards and folding."""
    import resource
    import threading

    import psutil
    import torch

    from analysis.settings import EstimatorSettings
    from analysis.streaming import engine, open_source, skeleton

    dtype = getattr(torch, dtype_name)
    # RSS sampled every 20 ms, per phase; ru_maxrss gives the overall peak.
    proc, phase, peaks, running = psutil.Process(), ["embedding"], {}, [True]
    timers = {"read_s": 0.0, "forward_s": 0.0, "fold_s": 0.0}
    read_bytes: list[int] = []
    source = open_source(folder)

    real_read = engine.read_tensors

    def timed_read(src, names, dt):
        t0 = time.perf_counter()
        out = real_read(src, names, dt)
        if any(".layers." in n for n in names):  # layers only: the body is read once, apart
            timers["read_s"] += time.perf_counter() - t0
            read_bytes.append(sum(2 * _numel(src.shape(s)) for s in names.values()))
        return out

    real_flush = engine._LayerStats.flush

    def timed_flush(self):
        t0 = time.perf_counter()
        real_flush(self)
        timers["fold_s"] += time.perf_counter() - t0

    real_build = skeleton.build_skeleton

    def build_with_timers(config, dt):
        model = real_build(config, dt)
        start = {}
        def begin(m, _args):
            phase[0] = "layers"
            start[id(m)] = time.perf_counter()

        for layer in model.model.layers:
            layer.register_forward_pre_hook(begin)
            layer.register_forward_hook(lambda m, a, o: timers.__setitem__(
                "forward_s", timers["forward_s"] + time.perf_counter() - start[id(m)]))
        return model

    engine.read_tensors = timed_read
    engine._LayerStats.flush = timed_flush
    skeleton.build_skeleton = build_with_timers


    def sample():
        while running[0]:
            rss = proc.memory_info().rss
            peaks[phase[0]] = max(peaks.get(phase[0], 0), rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ids = torch.randint(0, VOCAB, (samples, seqlen), generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    acc = engine.stream_capture(source, ids, EstimatorSettings(batch_size=batch_size),
                                dtype=dtype)
    total = time.perf_counter() - t0
    running[0] = False
    sampler.join()
    layers = source.config.num_hidden_layers
    return {
        "layers": layers, "samples": samples, "seqlen": seqlen, "batch_size": batch_size,
        "dtype": dtype_name, "threads": torch.get_num_threads(),
        "total_s": round(total, 1), "forward_s": round(timers["forward_s"], 1),
        "fold_s": round(timers["fold_s"], 1), "layer_read_s_background": round(timers["read_s"], 1),
        "total_over_forward": round(total / max(timers["forward_s"], 1e-9), 2),
        "bytes_read_per_layer": read_bytes[0] if read_bytes else 0,
        "layer_read_gib_per_s": round(sum(read_bytes) / 2**30 / max(timers["read_s"], 1e-9), 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_rss_gb_by_phase": {k: round(v / 2**30, 2) for k, v in peaks.items()},
        "finite": bool(torch.isfinite(acc.z_entropy).all()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32, help="decoder layers (32 = the real model)")
    ap.add_argument("--samples", type=int, default=8, help="N windows")
    ap.add_argument("--seqlen", type=int, default=128, help="T tokens per window")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--dir", type=Path, default=None, help="checkpoint folder (default: cache/bench/...)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint for another run")
    ap.add_argument("--analyse", type=Path, default=None, help=argparse.SUPPRESS)  # the subprocess
    args = ap.parse_args()

    if args.analyse is not None:
        print(json.dumps(analyse(args.analyse, args.samples, args.seqlen, args.batch_size, args.dtype)))
        return

    from analysis.paths import cache_dir

    folder = args.dir or cache_dir() / "bench" / f"llama31-8b-shaped-{args.layers}L"
    print(f"checkpoint: {folder} ({checkpoint_bytes(args.layers) / 2**30:.1f} GiB of bf16)")
    try:
        t0 = time.perf_counter()
        write_checkpoint(folder, args.layers)
        print(f"written in {time.perf_counter() - t0:.0f} s; analysing in a subprocess", flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--analyse", str(folder), "--samples", str(args.samples),
             "--seqlen", str(args.seqlen), "--batch-size", str(args.batch_size), "--dtype", args.dtype],
            capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"analysis failed:\n{out.stderr[-4000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep and folder.exists():
            shutil.rmtree(folder)
            print(f"deleted {folder}")


if __name__ == "__main__":
    main()
