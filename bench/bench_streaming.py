"""Benchmark: layer-streaming analysis of a Llama-3.1-8B-shaped checkpoint on the CPU.

Run: .venv/bin/python bench/bench_streaming.py [--layers 32] [--samples 8] [--seqlen 128]
         [--bare] [--format safetensors|gguf] [--quant q8_0|q4_0] [--json out.json]

1. Writes a checkpoint with Llama-3.1-8B's real config (hidden 4096, 32 layers, 32 heads,
   8 KV heads, intermediate 14336, vocab 128256, rope theta 500000 with llama3 scaling)
   and random bf16 weights, as sharded safetensors, one shard per layer, never holding
   more than one shard in memory. It goes to `cache/bench/` (or `--dir`) and is deleted at
   the end unless `--keep`; an existing complete checkpoint is reused. `--layers` cuts the
   depth for a quick check (about 0.44 GB of disk per layer plus 2.1 GB of embeddings
   and head).
   `--format gguf` writes one llama GGUF instead, its matrices quantised to Q8_0 or Q4_0
   by the `gguf` package in numpy (`gguf.quants.quantize`), tensor by tensor after a
   header written from the shapes alone (see `write_gguf`).
2. Analyses it with `stream_capture` in a fresh subprocess, so that the peak RSS is the
   analysis's own: N windows of T random tokens, float32 on the CPU. With `--bare`, a
   second subprocess streams the same layers the same way (same skeleton, embedding step,
   read-ahead and layer calls) with no statistics (`bare_stream`), for analysis / bare.
3. Reports peak RSS (target: under 4 GB for the full model on a 24 GB machine), total
   time, bytes read per layer (as stored: bf16, or the GGUF's quantised bytes) and read
   throughput (including the conversion to float32 and, for GGUF, the dequantisation),
   and the time spent inside the decoder layers' forward passes (hooks around each layer
   call) against the total; with `--bare`, the analysis' total and in-layer time over
   the bare pass's.
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


def analyse(folder: Path, samples: int, seqlen: int, batch_size: int, dtype_name: str,
            bare: bool = False) -> dict:
    """The streaming analysis with timers around reads, layer forwards and folding; with
    `bare`, the same layers streamed the same way with no statistics (`bare_stream`)."""
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
            read_bytes.append(sum(_stored_bytes(src, s) for s in names.values()))
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
    if bare:
        finite = bare_stream(source, ids, batch_size, dtype)
    else:
        acc = engine.stream_capture(source, ids, EstimatorSettings(batch_size=batch_size),
                                    dtype=dtype)
        finite = bool(torch.isfinite(acc.z_entropy).all())
    total = time.perf_counter() - t0
    running[0] = False
    sampler.join()
    layers = source.config.num_hidden_layers
    return {
        "mode": "bare" if bare else "analysis", "source": source.__class__.__name__,
        "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "layers": layers, "samples": samples, "seqlen": seqlen, "batch_size": batch_size,
        "dtype": dtype_name, "threads": torch.get_num_threads(),
        "total_s": round(total, 1), "forward_s": round(timers["forward_s"], 1),
        "fold_s": round(timers["fold_s"], 1), "layer_read_s_background": round(timers["read_s"], 1),
        "total_over_forward": round(total / max(timers["forward_s"], 1e-9), 2),
        "bytes_read_per_layer": read_bytes[0] if read_bytes else 0,
        "layer_read_gib_per_s": round(sum(read_bytes) / 2**30 / max(timers["read_s"], 1e-9), 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_rss_gb_by_phase": {k: round(v / 2**30, 2) for k, v in peaks.items()},
        "finite": finite,
    }


def _stored_bytes(source, name: str) -> int:
    """Bytes of tensor `name` as stored in the file (what the disk or page cache delivers)."""
    # A GGUF source dequantises to float32, so its dtype says nothing about the file; its
    # header layout has the real size (private to the source, read here only to report).
    layout, hf = getattr(source, "_stored", None), getattr(source, "_hf", None)
    if layout is not None and hf is not None:
        return layout[hf[name][0]].n_bytes
    return _numel(source.shape(name)) * source.dtype(name).itemsize


def bare_stream(source, ids, batch_size: int, dtype) -> bool:
    """The same layers streamed as `stream_capture` streams them, with no statistics.

    Same skeleton, same embedding step (`record_layer_inputs`), same reads through
    `engine.read_tensors` with the next layer read ahead on one background thread, the same
    layer calls; only the hooks, the folding and the accumulator are missing. So
    analysis/bare of the totals is the cost of the statistics in a streamed run, and the
    forward timers (hooks around each layer call, set by `analyse`) time the same calls.
    Returns whether the last hidden states are finite.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from analysis.architectures import get_architecture
    from analysis.streaming import engine, skeleton

    device = torch.device("cpu")
    with torch.inference_mode():
        # Module attributes, not imported names, so that the timers `analyse` patches in
        # (reads, forward hooks) apply here as they do inside the engine.
        model = skeleton.build_skeleton(source.config, dtype)
        layers = get_architecture(model).layers(model)
        layer_names = [skeleton.checkpoint_names(model, source, names)
                       for names in skeleton.layer_param_names(model)]
        body_names = skeleton.checkpoint_names(model, source, skeleton.body_param_names(model))
        skeleton.move_buffers(model, device)
        batches = [ids[s:s + batch_size] for s in range(0, ids.shape[0], batch_size)]
        hidden, layer_inputs = [], []
        with skeleton.loaded(model, engine.read_tensors(source, body_names, dtype), device):
            for batch in batches:
                z0, calls = skeleton.record_layer_inputs(model, batch, device)
                hidden.append(z0)
                layer_inputs.append(calls)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(engine.read_tensors, source, layer_names[0], dtype)
            for i, layer in enumerate(layers):
                tensors = pending.result()
                with skeleton.loaded(model, tensors, device):
                    if i + 1 < len(layers):
                        pending = pool.submit(engine.read_tensors, source, layer_names[i + 1], dtype)
                    for b, h in enumerate(hidden):
                        args, kwargs = layer_inputs[b][i]
                        out = layer(h, *args, **kwargs)
                        hidden[b] = out[0] if isinstance(out, tuple) else out
    return all(bool(torch.isfinite(h).all()) for h in hidden)


GGUF_QUANTS = ("q8_0", "q4_0")


def gguf_path(folder: Path, quant: str) -> Path:
    return folder / f"llama31-8b-shaped-{quant}.gguf"


def _gguf_tensors(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """(llama.cpp name, HF shape [out, in]) in file order: embeddings, layers, norm, head."""
    hf_to_gguf = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                  "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                  "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                  "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
                  "post_attention_layernorm": "ffn_norm"}
    out = [("token_embd.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        for name, shape in _layer_shapes(i).items():
            stem = name[len(f"model.layers.{i}."):-len(".weight")]
            out.append((f"blk.{i}.{hf_to_gguf[stem]}.weight", shape))
    return out + [("output_norm.weight", (HIDDEN,)), ("output.weight", (VOCAB, HIDDEN))]


def gguf_bytes(layers: int, quant: str) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[quant.upper()]]
    return sum(_numel(s) // block * size if len(s) == 2 else 4 * _numel(s)
               for _, s in _gguf_tensors(layers))


def write_gguf(path: Path, layers: int, quant: str, seed: int = 0) -> None:
    """An 8B-shaped llama GGUF: matrices quantised with `gguf.quants.quantize` (numpy),
    norms float32 as llama.cpp stores them, one tensor in memory at a time.

    The header (every tensor's name, shape, type and size) is written first from the shapes
    alone; the data then follows tensor by tensor. Random weights are not rotary-permuted
    the way llama.cpp permutes real q/k rows: permuting random values gives random values.
    The config is plain llama (rope theta 500000, no llama3 rope scaling, which this
    writer does not store): the compute per layer is the same.
    """
    import numpy as np
    from gguf import (
        GGML_QUANT_SIZES,
        GGMLQuantizationType,
        GGUFWriter,
        quant_shape_to_byte_shape,
        quants,
    )

    marker = path.with_suffix(".complete")
    if marker.is_file():
        print(f"reusing {path}")
        return
    need = gguf_bytes(layers, quant)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < need * 1.05:
        sys.exit(f"not enough disk: the GGUF needs {need / 2**30:.1f} GiB, "
                 f"{free / 2**30:.1f} GiB are free in {path.parent}")
    qtype = GGMLQuantizationType[quant.upper()]
    block, block_bytes = GGML_QUANT_SIZES[qtype]
    w = GGUFWriter(path, "llama")
    w.add_name("llama31-8b-shaped-random")
    w.add_context_length(8192)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(layers)
    w.add_feed_forward_length(INTERMEDIATE)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    tensors = _gguf_tensors(layers)
    for name, shape in tensors:
        if len(shape) == 2:
            w.add_tensor_info(name, quant_shape_to_byte_shape(shape, qtype), np.dtype(np.uint8),
                              _numel(shape) // block * block_bytes, raw_dtype=qtype)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), 4 * _numel(shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for k, (name, shape) in enumerate(tensors):
        if len(shape) == 2:
            values = rng.standard_normal(shape, dtype=np.float32)
            values *= 0.02
            w.write_tensor_data(quants.quantize(values, qtype))
        else:
            w.write_tensor_data((1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32))
        if name.endswith("ffn_down.weight") or k == 0 or k == len(tensors) - 1:
            print(f"  wrote {name} ({k + 1}/{len(tensors)}, {time.perf_counter() - started:.0f} s)",
                  flush=True)
    w.close()
    marker.write_text(json.dumps({"layers": layers, "quant": quant, "bytes": need}))


def _run_pass(target: Path, args, bare: bool) -> dict:
    """One analysis (or bare) pass in a fresh subprocess, so that its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--analyse", str(target), "--samples", str(args.samples),
           "--seqlen", str(args.seqlen), "--batch-size", str(args.batch_size), "--dtype", args.dtype]
    out = subprocess.run(cmd + (["--bare"] if bare else []), capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        sys.exit(f"{'bare pass' if bare else 'analysis'} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32, help="decoder layers (32 = the real model)")
    ap.add_argument("--samples", type=int, default=8, help="N windows")
    ap.add_argument("--seqlen", type=int, default=128, help="T tokens per window")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--format", default="safetensors", choices=["safetensors", "gguf"],
                    help="checkpoint written and streamed: bf16 safetensors shards or one GGUF")
    ap.add_argument("--quant", default="q8_0", choices=GGUF_QUANTS, help="GGUF matrix type")
    ap.add_argument("--bare", action="store_true",
                    help="also stream the same layers with no statistics, for analysis/bare")
    ap.add_argument("--dir", type=Path, default=None, help="checkpoint folder (default: cache/bench/...)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint for another run")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--analyse", type=Path, default=None, help=argparse.SUPPRESS)  # the subprocess
    args = ap.parse_args()

    if args.analyse is not None:
        print(json.dumps(analyse(args.analyse, args.samples, args.seqlen, args.batch_size,
                                 args.dtype, bare=args.bare)))
        return

    from analysis.paths import cache_dir

    gguf = args.format == "gguf"
    tag = f"gguf-{args.quant}" if gguf else "bf16"
    folder = args.dir or cache_dir() / "bench" / f"llama31-8b-shaped-{args.layers}L-{tag}"
    size = gguf_bytes(args.layers, args.quant) if gguf else checkpoint_bytes(args.layers)
    print(f"checkpoint: {folder} ({size / 2**30:.1f} GiB, {tag})")
    try:
        t0 = time.perf_counter()
        if gguf:
            target = gguf_path(folder, args.quant)
            write_gguf(target, args.layers, args.quant)
        else:
            target = folder
            write_checkpoint(folder, args.layers)
        written = time.perf_counter() - t0
        print(f"written in {written:.0f} s; analysing in a subprocess", flush=True)
        result = {"format": tag, "file_gib": round(size / 2**30, 2), "write_s": round(written),
                  "analysis": _run_pass(target, args, bare=False)}
        print(json.dumps(result["analysis"], indent=2), flush=True)
        if args.bare:
            # After the analysis, so both read a checkpoint the analysis has just read too
            # (the first pass after writing finds it in the page cache as well, on this
            # machine, as far as free memory allows).
            result["bare"] = _run_pass(target, args, bare=True)
            print(json.dumps(result["bare"], indent=2), flush=True)
            a, b = result["analysis"], result["bare"]
            result["analysis_over_bare_total"] = round(a["total_s"] / b["total_s"], 3)
            result["analysis_over_bare_forward"] = round(a["forward_s"] / b["forward_s"], 3)
            print(f"analysis / bare streamed pass: total {result['analysis_over_bare_total']:.3f}, "
                  f"inside the layer calls {result['analysis_over_bare_forward']:.3f}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        if not args.keep and folder.exists():
            shutil.rmtree(folder)
            print(f"deleted {folder}")


if __name__ == "__main__":
    main()
