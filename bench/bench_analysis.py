"""Benchmark: the whole analysis against a bare forward pass, and peak memory vs N.

Run: .venv/bin/python bench/bench_analysis.py [--model demo:smollm2-135m] [--device auto]

1. Overhead: on the same calibration tokens, time (a) a bare forward pass of the decoder
   stack (no LM head, as the analysis runs it) and (b) the full analysis (same pass plus
   every estimator at both granularities), interleaved, median of repeats. Target: ratio
   <= 1.5 on CPU (N=32, T=128), <= 1.2 on a GPU.
2. Memory: peak memory of the analysis at N=16 and N=64, each in a fresh subprocess
   (CPU: peak RSS during the analysis, the kernel's mark reset after the model load; GPU:
   torch.cuda.max_memory_allocated).
   Target: within 10% of each other (the statistics stream, so memory does not grow with N).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _setup(model_spec: str, device: str, n: int, t: int, batch_size: int):
    from analysis.calibration import load_calibration
    from analysis.models import load_model
    from analysis.settings import CalibrationSettings, EstimatorSettings, ModelSettings

    loaded = load_model(ModelSettings(model_spec, device=device))
    cal = load_calibration(CalibrationSettings("builtin:licenses", n, t), loaded.tokenizer,
                           model=loaded.model, on_gpu=loaded.on_gpu)
    return loaded, cal.input_ids, EstimatorSettings(batch_size=batch_size)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def overhead(model_spec: str, device: str, n: int, t: int, batch_size: int, repeats: int) -> dict:
    import torch

    from analysis.capture import capture

    loaded, ids, opts = _setup(model_spec, device, n, t, batch_size)
    body = loaded.model.base_model

    @torch.inference_mode()
    def bare():
        for s in range(0, ids.shape[0], batch_size):
            body(input_ids=ids[s:s + batch_size].to(loaded.device), use_cache=False)

    def full():
        capture(loaded.model, ids, opts)

    bare()
    full()  # warm-up
    times: dict[str, list[float]] = {"bare": [], "analysis": []}
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("analysis", full)):
            _sync(loaded.device)
            t0 = time.perf_counter()
            fn()
            _sync(loaded.device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": model_spec, "device": str(loaded.device), "dtype": str(loaded.dtype),
            "N": n, "T": t, "batch_size": batch_size, "repeats": repeats,
            "bare_s": med["bare"], "analysis_s": med["analysis"],
            "ratio": med["analysis"] / med["bare"],
            # Each repeat times the two back to back, so its own ratio is less exposed to
            # the machine's slow drift than the ratio of the medians.
            "paired_ratios": [a / b for a, b in zip(times["analysis"], times["bare"], strict=True)],
            "all_times": times}


def _rss_mb() -> float:
    """Peak RSS of this process so far, in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so that the peak measured next is
    the analysis' own rather than the model load's. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_since_reset_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise OSError("no VmHWM in /proc/self/status")


def memory_child(model_spec: str, device: str, n: int, t: int, batch_size: int) -> dict:
    import torch

    from analysis.capture import capture

    loaded, ids, opts = _setup(model_spec, device, n, t, batch_size)
    load_peak = _rss_mb()
    reset = _reset_peak_rss()
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated() / 2**20
    capture(loaded.model, ids, opts)
    # Without the reset, the peak is the larger of the load's and the analysis'.
    peak = _peak_rss_since_reset_mb() if reset else _rss_mb()
    out = {"N": n, "peak_rss_mb": peak, "load_peak_rss_mb": load_peak,
           "peak_is_analysis_only": reset}
    if loaded.device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_increase_mb"] = out["gpu_peak_mb"] - base_gpu
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="demo:smollm2-135m")
    p.add_argument("--device", default="auto")
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--seqlen", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true", help="only measure the overhead")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    import torch

    on_gpu = a.device in ("cuda", "auto") and torch.cuda.is_available()
    t = a.seqlen or (256 if on_gpu else 128)
    if a.memory_child is not None:
        print(json.dumps(memory_child(a.model, a.device, a.memory_child, t, a.batch_size)))
        return
    n = a.samples or (128 if on_gpu else 32)
    res = {"overhead": overhead(a.model, a.device, n, t, a.batch_size, a.repeats), "memory": []}
    print(f"bare forward {res['overhead']['bare_s']:.2f} s, analysis {res['overhead']['analysis_s']:.2f} s, "
          f"ratio {res['overhead']['ratio']:.2f} (N={n}, T={t}, {res['overhead']['device']}); "
          f"per-repeat ratios {', '.join(f'{r:.2f}' for r in res['overhead']['paired_ratios'])}",
          flush=True)
    if a.skip_memory:
        if a.json:  # bench/bench_compare.py reads the overhead figures from here
            Path(a.json).write_text(json.dumps(res, indent=2))
        return
    for mem_n in (16, 64):
        out = subprocess.run([sys.executable, __file__, "--model", a.model, "--device", a.device,
                              "--seqlen", str(t), "--batch-size", str(a.batch_size),
                              "--memory-child", str(mem_n)], capture_output=True, text=True, check=True)
        res["memory"].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(res["memory"][-1]), flush=True)
    key = "gpu_peak_mb" if "gpu_peak_mb" in res["memory"][0] else "peak_rss_mb"
    m16, m64 = res["memory"][0][key], res["memory"][1][key]
    res["memory_ratio_64_over_16"] = m64 / m16
    print(f"peak memory N=16 {m16:.0f} MB, N=64 {m64:.0f} MB, ratio {m64 / m16:.3f} ({key})")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
