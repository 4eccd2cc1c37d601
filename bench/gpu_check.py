"""Exercise the CUDA path end to end and print what happened (run on a GPU machine).

    python bench/gpu_check.py --tokenizer DIR [--config CONFIG.json] [--out result.json]

Builds a randomly initialised model from CONFIG (default: the tokenizer folder's
config.json), saves it as a local model folder, then checks: automatic device/dtype
(cuda + bf16), analysis in bf16 against fp32 on the same GPU, loading with
device_map="auto", in-memory pruning with KV-cache generation, export from a GPU model
with a reload check, and quality/speed figures. Random weights are enough here: this
checks device placement and dtypes, not entropy dynamics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from analysis.models import describe_devices, load_model
    from analysis.settings import (
        AnalysisRequest,
        CalibrationSettings,
        EstimatorSettings,
        ModelSettings,
    )
    from entrodrop import service
    from pruning.apply import pruned
    from pruning.evaluate import evaluate_quality, measure_speed
    from pruning.export import export_pruned

    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--config", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    report: dict = {"devices": describe_devices(), "checks": {}}
    checks = report["checks"]
    work = Path(tempfile.mkdtemp())
    folder = work / "model"
    config = AutoConfig.from_pretrained(a.config or a.tokenizer)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(a.tokenizer).save_pretrained(folder)

    loaded = load_model(ModelSettings(str(folder)))
    checks["auto_device_dtype"] = {"device": str(loaded.device), "dtype": str(loaded.dtype),
                                   "ok": loaded.device.type == "cuda" and loaded.dtype == torch.bfloat16}

    cal = CalibrationSettings("builtin:licenses", samples=16, seqlen=128)
    opts = EstimatorSettings(batch_size=8)
    t0 = time.perf_counter()
    bf16 = service.analyze(AnalysisRequest(ModelSettings(str(folder)), (cal,), opts, use_cache=False),
                           loaded=loaded).runs[0]
    checks["analysis_bf16_seconds"] = time.perf_counter() - t0
    fp32_loaded = load_model(ModelSettings(str(folder), dtype="float32"))
    fp32 = service.analyze(AnalysisRequest(ModelSettings(str(folder), dtype="float32"), (cal,), opts,
                                           use_cache=False), loaded=fp32_loaded).runs[0]
    rel = {}
    for est in ("bucket", "knn", "renyi"):
        x = torch.tensor(bf16["entropy_curve"][est], dtype=torch.float64)
        y = torch.tensor(fp32["entropy_curve"][est], dtype=torch.float64)
        rel[est] = float(((x - y).abs() / y.abs().clamp_min(1e-6)).max())
    checks["bf16_vs_fp32_curve_max_rel_diff"] = rel
    checks["nonfinite_blocks_bf16"] = bf16["nonfinite_blocks"]

    mapped = load_model(ModelSettings(str(folder), device_map_auto=True))
    dm = service.analyze(AnalysisRequest(ModelSettings(str(folder), device_map_auto=True), (cal,), opts,
                                         use_cache=False), loaded=mapped).runs[0]
    checks["device_map_auto"] = {
        "hf_device_map": sorted({str(v) for v in getattr(mapped.model, "hf_device_map", {}).values()}),
        "curve_equal_to_plain_bf16": dm["entropy_curve"] == bf16["entropy_curve"],
    }
    del mapped

    ids = loaded.tokenizer("The law shall", return_tensors="pt").input_ids.to(loaded.device)
    for g, blocks in (("layer", [3, 5]), ("attn", [0, 4])):
        with pruned(loaded.model, g, blocks):
            cached = loaded.model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
            nocache = loaded.model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
        checks[f"generate_{g}_cache_matches_nocache"] = bool(torch.equal(cached, nocache))

    plan = service.stage_plan(bf16)
    held = service.heldout_windows(cal, loaded, 8)
    for g in ("layer", "attn"):
        d = service.decide(bf16, g, "knn", 4, plan)
        q = evaluate_quality(loaded.model, held, {"pruned": lambda d=d, g=g: pruned(loaded.model, g, d["blocks"])})
        s = measure_speed(loaded.model, lambda d=d, g=g: pruned(loaded.model, g, d["blocks"]), repeats=5)
        checks[f"quality_{g}_k4"] = {k: v for k, v in q["pruned"].to_dict().items()}
        checks[f"speed_{g}_k4"] = s.to_dict()
        out = export_pruned(loaded.model, loaded.tokenizer, work / f"export-{g}", granularity=g,
                            blocks=d["blocks"], manifest={"check": "gpu"})
        re = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                  trust_remote_code=(g == "attn")).to(loaded.device)
        with torch.inference_mode(), pruned(loaded.model, g, d["blocks"]):
            ref = loaded.model(held[:2].to(loaded.device)).logits.float()
        with torch.inference_mode():
            got = re.to(loaded.dtype)(held[:2].to(loaded.device)).logits.float()
        checks[f"export_{g}_reload_max_abs_logit_diff"] = float((ref - got).abs().max())
    report["ok"] = checks["auto_device_dtype"]["ok"]
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
