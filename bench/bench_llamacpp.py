"""Speed of block-pruned models in llama.cpp next to transformers, on the demo model.

For attn and layer pruning at K = 0..8 (the entropy order, knn criterion, automatic
S_start, on the default calibration), measures prefill throughput and decode latency of
the pruned model as ratios to the unpruned one, in both engines, each interleaved with the
unpruned model in the same engine (`pruning.speed.measure_speed` for transformers in
float32, `pruning.llamacpp.measure_gguf_speed` for GGUF files of --gguf-type). Prints a
Markdown table; --out also writes the figures as JSON.

    python bench/bench_llamacpp.py                      # SmolLM2-135M, f16 GGUF
    python bench/bench_llamacpp.py --ks 0,4,8 --repeats 5 --out llamacpp.json

Needs llama.cpp's binding (`bash scripts/setup.sh --with-engines`).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.models import load_model  # noqa: E402
from analysis.paths import cache_dir  # noqa: E402
from analysis.settings import AnalysisRequest, CalibrationSettings, ModelSettings  # noqa: E402
from entrodrop import service  # noqa: E402
from pruning.export import export_pruned  # noqa: E402
from pruning.gguf_export import folder_to_gguf, source_gguf  # noqa: E402
from pruning.llamacpp import default_threads, llama_cpp, measure_gguf_speed  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo:smollm2-135m")
    p.add_argument("--ks", default="0..8")
    p.add_argument("--granularities", default="attn,layer")
    p.add_argument("--criterion", default="knn")
    p.add_argument("--gguf-type", default="f16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=None,
                   help="llama.cpp threads (default: every core this process may use)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    llama_cpp()
    lo, _, hi = a.ks.partition("..")
    ks = list(range(int(lo), int(hi) + 1)) if hi else [int(k) for k in a.ks.split(",")]

    loaded = load_model(ModelSettings(a.model, device="cpu", dtype="float32"))
    profile = service.analyze(AnalysisRequest(ModelSettings(a.model, device="cpu"),
                                              (CalibrationSettings("builtin:licenses"),))).runs[0]
    plan = service.stage_plan(profile)
    tokenizer_gguf = source_gguf(a.model)
    rows = []
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        def gguf_of(granularity: str, blocks: list[int], name: str) -> Path:
            hf = Path(tmp) / f"{name}-hf"
            export_pruned(loaded.model, loaded.tokenizer, hf, granularity=granularity,
                          blocks=blocks, manifest={})
            path = Path(tmp) / f"{name}.gguf"
            folder_to_gguf(hf, path, gguf_type=a.gguf_type, tokenizer_gguf=tokenizer_gguf)
            shutil.rmtree(hf)
            return path

        base = gguf_of("layer", [], "base")
        for g in a.granularities.split(","):
            order = service.decision(profile, g, a.criterion, 0, plan).order
            for k in ks:
                blocks = sorted(order[:k])
                t0 = time.perf_counter()
                hf_speed = service.speed(loaded, g, blocks, prompt_len=a.prompt_len,
                                         new_tokens=a.new_tokens, repeats=a.repeats)
                path = gguf_of(g, blocks, f"{g}{k}")
                cpp = measure_gguf_speed(path, base, prompt_len=a.prompt_len,
                                         new_tokens=a.new_tokens, repeats=a.repeats,
                                         n_threads=a.threads)
                path.unlink()
                row = {"granularity": g, "k": k, "blocks": blocks,
                       "transformers": hf_speed, "llama_cpp": cpp.to_dict()}
                rows.append(row)
                print(f"{g} K={k}: transformers prefill x{hf_speed['prefill_ratio']:.2f} "
                      f"decode x{hf_speed['decode_ratio']:.2f}; llama.cpp prefill "
                      f"x{cpp.prefill_ratio:.2f} decode x{cpp.decode_ratio:.2f} "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    print(f"\n{a.model}, prompt {a.prompt_len} tokens, {a.new_tokens} decode steps, median of "
          f"{a.repeats} interleaved repeats; transformers float32 eager, llama.cpp "
          f"{a.gguf_type} GGUF with {a.threads or default_threads()} threads; {platform.processor() or platform.machine()}\n")
    print("| granularity | K | transformers prefill | transformers decode | llama.cpp prefill "
          "| llama.cpp decode | llama.cpp base prefill tok/s | llama.cpp base decode ms/token |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        h, c = r["transformers"], r["llama_cpp"]
        print(f"| {r['granularity']} | {r['k']} | {h['prefill_ratio']:.2f} | {h['decode_ratio']:.2f} "
              f"| {c['prefill_ratio']:.2f} | {c['decode_ratio']:.2f} "
              f"| {c['prefill_tokens_per_s_base']:.0f} | {c['decode_ms_per_token_base']:.2f} |")
    if a.out:
        Path(a.out).write_text(json.dumps({"model": a.model, "gguf_type": a.gguf_type,
                                           "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
