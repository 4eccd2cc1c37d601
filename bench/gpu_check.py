"""Exercise the CUDA path end to end; every comparison decides the exit status.

    python bench/gpu_check.py --tokenizer DIR [--config CONFIG.json] [--out result.json]
                              [--device cuda|cpu] [--calibration SPEC] [--samples N] [--seqlen T]

Builds a randomly initialised model from CONFIG (default: the tokenizer folder's
config.json), saves it as a local model folder, then checks: automatic device/dtype
(cuda + bf16), analysis in bf16 against fp32 on the same device, loading with
device_map="auto", in-memory pruning with KV-cache generation, export from the bf16 model
with a reload check, and quality/speed figures. Random weights are enough here: this
checks device placement and dtypes, not entropy dynamics.

Each check is compared with a tolerance stated below, printed as PASS / FAIL (SKIP where
it does not apply, INFO for figures that are not comparisons), followed by a summary; the
exit status is 1 if any check fails. `--device cpu` runs the same checks on the CPU (auto
device/dtype must then give cpu + float32, the bf16 model is loaded explicitly, and the
device_map="auto" check is skipped): a quick end-to-end run on a tiny model, no GPU needed.
The decisions are the pure function `evaluate`, which tests/bench/test_gpu_check.py feeds
made-up measurements. The check lines go to stdout; `--out` writes the measurements and
the checks as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# --------------------------------------------------------------------------- tolerances
#
# Curves and logits are compared relative to their scale: the largest |value| of the
# fp32 (reference) curve, or the largest |logit| of the reference logits. A per-point
# relative difference is meaningless where a curve crosses zero (the knn curve can), and a
# scale-relative one stays put when the same check runs on a trained model whose logits are
# 10x larger than a random model's.

CURVE_REL_TOL = {"bucket": 0.01, "knn": 0.15, "renyi": 0.01}
"""bf16 analysis against fp32 on the same device: max |H_bf16 - H_fp32| / max |H_fp32| per
estimator. bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2%) in the hidden
states; the estimators run in fp32 on them. Measured on a random smollm2-135m config
(8 x 128 windows of builtin:licenses, CPU bf16 vs fp32): bucket 0.03%, knn 0.10%,
renyi 0.11% of scale. The H100 run in docs/BENCHMARKS.md (older code) found bucket and
renyi within 0.03% and 0.1% per point, which bounds the scale-relative figure: 1% leaves
~10x headroom. knn moves more: log r_i sits at the 1e-10 floor for duplicate tokens, and
on the H100 the embedding point (the knn curve's largest |value|) moved by up to 11%;
15% keeps that passing while a curve that bf16 really broke moves by O(100%). Text that
the tokenizer maps to mostly one id (e.g. a word-level test tokenizer on license text)
fails this check honestly: its curves hinge on differences between duplicate tokens that
lie below bf16's precision."""

DEVICE_MAP_CURVE_REL_TOL = 0.0
"""device_map="auto" on one GPU places every module on that GPU, so the forward runs the
same kernels on the same inputs as the plain load: the curves must be bit-identical (the
H100 run found them equal). Any difference means accelerate's placement changed the
computation."""

LOGIT_REL_TOL = 0.05
"""bf16 logits of two computations of the same thing (KV-cache steps against a no-cache
forward of the same tokens; the exported, reloaded model against the in-memory pruned
one): max |a - b| / max |b|. They differ only by bf16 rounding in different matmul
shapes/orders: ~2^-9 per op, grown through the layers. The random smollm2-135m config
(max |logit| ~2.4) gave 1.0-1.1% for the cache and 1.4-1.6% for the export on a CPU; the
H100 run measured 0.034 absolute for the export (~1.4%): 5% leaves ~3x headroom. A wrong
KV cache after pruning (stale layer indices) or a wrongly exported block changes logits by
O(100%) of their scale."""

NEAR_TIE_FACTOR = 2.0
"""Greedy cache and no-cache generation may pick different tokens only at a near-tie: if
every logit differs by at most d, an argmax flips only where the no-cache run prefers its
token by at most 2 d. Random weights make near-ties common, so a flip within
NEAR_TIE_FACTOR * LOGIT_REL_TOL * scale is rounding; a larger margin is a real mismatch."""

NONFINITE_BLOCKS_ALLOWED = 0
"""bf16 has fp32's exponent range: a random model's hidden states never overflow it, so
any block with NaN/inf states in bf16 is a bug (fp16 would be another matter)."""

OFFLOAD_DEVICES = ("cpu", "disk", "meta")
"""device_map="auto" must not offload a small model off the GPU."""

PASS, FAIL, SKIP, INFO = "PASS", "FAIL", "SKIP", "INFO"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP | INFO
    value: str  # what was measured
    limit: str  # what it was compared with

    def line(self) -> str:
        return f"{self.status:4}  {self.name}: {self.value}" + (f"  [{self.limit}]" if self.limit else "")


def _check(name: str, ok: bool, value: str, limit: str) -> Check:
    return Check(name, PASS if ok else FAIL, value, limit)


def _logit_check(name: str, measured: dict) -> Check:
    """Logits of two runs that should agree: the largest difference relative to their scale."""
    diff, scale = measured["max_abs_logit_diff"], measured["logit_scale"]
    rel = _rel(diff, scale)
    return _check(name, rel <= LOGIT_REL_TOL,
                  f"max |diff| {diff:.3g} of scale {scale:.3g} (rel {rel:.3g})",
                  f"tol {LOGIT_REL_TOL:g}")


def curve_rel_diff(curve: list, reference: list) -> float:
    """max_i |curve_i - reference_i| / max_i |reference_i| (inf where one has a null point
    the other lacks, or the lengths differ; 0 for two identical curves)."""
    if len(curve) != len(reference):
        return math.inf
    worst = 0.0
    scale = 0.0
    for a, b in zip(curve, reference, strict=True):
        if (a is None) != (b is None):
            return math.inf
        if a is None:
            continue
        if not (math.isfinite(a) and math.isfinite(b)):
            return math.inf
        worst = max(worst, abs(a - b))
        scale = max(scale, abs(b))
    if worst == 0.0:
        return 0.0
    return worst / scale if scale > 0 else math.inf


def _rel(diff: float, scale: float) -> float:
    if not (math.isfinite(diff) and math.isfinite(scale)):
        return math.inf
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else math.inf


def evaluate(m: dict, *, expected_device: str, expected_dtype: str) -> list[Check]:
    """Every comparison of the measurements ``m`` (as ``measure`` returns them) against its
    tolerance. Pure: no torch, no model. ``expected_device`` is a device type ("cuda",
    "cpu"), ``expected_dtype`` a dtype string ("torch.bfloat16")."""
    checks: list[Check] = []

    auto = m["auto"]
    checks.append(_check(
        "auto_device_dtype",
        auto["device"].split(":")[0] == expected_device and auto["dtype"] == expected_dtype,
        f"{auto['device']} {auto['dtype']}", f"expected {expected_device} {expected_dtype}"))

    for est, tol in CURVE_REL_TOL.items():
        rel = curve_rel_diff(m["curves"]["bf16"][est], m["curves"]["fp32"][est])
        checks.append(_check(f"bf16_vs_fp32_curve_{est}", rel <= tol,
                             f"max rel diff {rel:.3g}", f"tol {tol:g}"))

    bad = {g: list(blocks) for g, blocks in m["nonfinite_blocks_bf16"].items() if blocks}
    count = sum(len(blocks) for blocks in bad.values())
    checks.append(_check("nonfinite_blocks_bf16", count <= NONFINITE_BLOCKS_ALLOWED,
                         f"{count} block(s) {bad}" if count else "none",
                         f"at most {NONFINITE_BLOCKS_ALLOWED}"))

    dm = m.get("device_map")
    if dm is None:
        checks.append(Check("device_map_auto_placement", SKIP, "needs CUDA", ""))
        checks.append(Check("device_map_auto_curves", SKIP, "needs CUDA", ""))
    else:
        devices = [str(d) for d in dm["devices"]]
        off = [d for d in devices if d in OFFLOAD_DEVICES]
        checks.append(_check("device_map_auto_placement", bool(devices) and not off,
                             f"devices {devices}", "all on the GPU"))
        worst = max(curve_rel_diff(dm["curves"][est], m["curves"]["bf16"][est])
                    for est in CURVE_REL_TOL)
        checks.append(_check("device_map_auto_curves", worst <= DEVICE_MAP_CURVE_REL_TOL,
                             f"max rel diff to plain bf16 {worst:.3g}",
                             f"tol {DEVICE_MAP_CURVE_REL_TOL:g}"))

    for g, gen in m["generate"].items():
        checks.append(_logit_check(f"generate_{g}_cache_logits", gen))
        first = gen["first_mismatch"]
        tie = NEAR_TIE_FACTOR * LOGIT_REL_TOL * gen["logit_scale"]
        if first is None:
            checks.append(_check(f"generate_{g}_cache_tokens", True,
                                 f"all {gen['steps']} tokens equal", "equal or near-tie"))
        else:
            margin = gen["mismatch_margin"]
            ok = margin is not None and math.isfinite(margin) and margin <= tie
            checks.append(_check(
                f"generate_{g}_cache_tokens", ok,
                f"first differs at step {first} of {gen['steps']}, margin {margin:.3g}",
                f"near-tie margin <= {tie:.3g}"))

    for name, q in m["quality"].items():
        values = {k: q.get(k) for k in ("perplexity", "kl", "top1")}
        finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values())
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                          for k, v in values.items())
        checks.append(_check(f"quality_{name}_finite", finite, shown, "all finite"))

    for g, ex in m["export"].items():
        checks.append(_logit_check(f"export_{g}_reload_logits", ex))

    for name, value in m.get("info", {}).items():
        checks.append(Check(name, INFO, value if isinstance(value, str) else json.dumps(value), ""))
    return checks


def summarize(checks: list[Check]) -> tuple[str, int]:
    """The PASS/FAIL lines and a summary; exit status 1 if any check failed, else 0."""
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, FAIL, SKIP)}
    failed = [c.name for c in checks if c.status == FAIL]
    lines = [c.line() for c in checks]
    lines.append(f"SUMMARY: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped"
                 + (f" (failed: {', '.join(failed)})" if failed else ""))
    return "\n".join(lines), 1 if failed else 0


# --------------------------------------------------------------------------- measuring


def _cache_vs_nocache(model, ids, new_tokens: int) -> dict:
    """Greedy generation with and without the KV cache, and the cache's step logits against
    one no-cache forward over the same tokens (teacher-forced, so every step is compared
    even after the two generations part at a near-tie)."""
    import torch

    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
              output_logits=True, return_dict_in_generate=True)
    prompt = ids.shape[1]
    with torch.inference_mode():
        cached = model.generate(ids, use_cache=True, **kw)
        nocache = model.generate(ids, use_cache=False, **kw)
        full = model(cached.sequences[:, :-1], use_cache=False).logits[:, prompt - 1:].float()
    steps = torch.stack(cached.logits, dim=1).float()
    a, b = cached.sequences[0, prompt:], nocache.sequences[0, prompt:]
    n = min(a.numel(), b.numel())
    differ = (a[:n] != b[:n]).nonzero()
    first = int(differ[0]) if differ.numel() else (None if a.numel() == b.numel() else n)
    margin = None
    if first is not None and first < n:
        ref = nocache.logits[first][0].float()
        margin = float(ref[b[first]] - ref[a[first]])
    elif first is not None:
        margin = math.inf
    return {"steps": int(n), "first_mismatch": first, "mismatch_margin": margin,
            "max_abs_logit_diff": float((steps - full).abs().max()),
            "logit_scale": float(full.abs().max())}


def measure(a: argparse.Namespace) -> dict:
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
    from pruning.evaluate import evaluate_quality
    from pruning.export import export_pruned
    from pruning.speed import measure_speed

    m: dict = {"devices": describe_devices(), "generate": {}, "quality": {}, "export": {},
               "info": {}}
    work = Path(tempfile.mkdtemp())
    try:
        folder = work / "model"
        config = AutoConfig.from_pretrained(a.config or a.tokenizer)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(a.tokenizer).save_pretrained(folder)

        # On a GPU machine the device is left to "auto", which must pick cuda (checked).
        device = "auto" if a.device == "cuda" else "cpu"

        def settings(**kw) -> ModelSettings:
            return ModelSettings(str(folder), device=device, **kw)

        auto = load_model(settings())
        m["auto"] = {"device": str(auto.device), "dtype": str(auto.dtype)}
        loaded = auto if auto.dtype == torch.bfloat16 else load_model(settings(dtype="bfloat16"))
        fp32_loaded = auto if auto.dtype == torch.float32 else load_model(settings(dtype="float32"))

        cal = CalibrationSettings(a.calibration, samples=a.samples, seqlen=a.seqlen)
        opts = EstimatorSettings(batch_size=8)

        def analyze(lm, **kw):
            request = AnalysisRequest(settings(**kw), (cal,), opts, use_cache=False)
            return service.analyze(request, loaded=lm).runs[0]

        t0 = time.perf_counter()
        bf16 = analyze(loaded, dtype="bfloat16")
        m["info"]["analysis_bf16_seconds"] = f"{time.perf_counter() - t0:.2f}"
        fp32 = analyze(fp32_loaded, dtype="float32")
        m["curves"] = {"bf16": bf16.entropy_curve, "fp32": fp32.entropy_curve}
        m["nonfinite_blocks_bf16"] = bf16.nonfinite_blocks
        if fp32_loaded is not auto:
            del fp32_loaded

        m["device_map"] = None
        if loaded.device.type == "cuda":
            mapped = load_model(settings(device_map_auto=True))
            dm = analyze(mapped, device_map_auto=True)
            m["device_map"] = {
                "devices": sorted({str(v) for v in getattr(mapped.model, "hf_device_map", {}).values()}),
                "curves": dm.entropy_curve,
            }
            del mapped

        n_layers = bf16.num_layers
        # The H100 run's blocks, kept inside a smaller model.
        probe = {g: sorted({min(b, n_layers - 1) for b in blocks})
                 for g, blocks in (("layer", (3, 5)), ("attn", (0, 4)))}
        ids = loaded.tokenizer("The law shall", return_tensors="pt").input_ids.to(loaded.device)
        for g, blocks in probe.items():
            with pruned(loaded.model, g, blocks):
                m["generate"][g] = _cache_vs_nocache(loaded.model, ids, a.new_tokens)

        plan = service.stage_plan(bf16)
        held = service.held_out_windows(cal, loaded, 8)
        for g in ("layer", "attn"):
            k = min(4, len(service.decision(bf16, g, "knn", 0, plan).order))
            blocks = list(service.decision(bf16, g, "knn", k, plan).blocks)
            q = evaluate_quality(loaded.model, held,
                                 {"pruned": lambda b=blocks, g=g: pruned(loaded.model, g, b)})
            m["quality"][f"{g}_k{k}"] = q["pruned"].to_dict()
            if a.speed_repeats > 0:
                s = measure_speed(loaded.model, lambda b=blocks, g=g: pruned(loaded.model, g, b),
                                  repeats=a.speed_repeats)
                m["info"][f"speed_{g}_k{k}"] = s.to_dict()
            out = export_pruned(loaded.model, loaded.tokenizer, work / f"export-{g}", granularity=g,
                                blocks=blocks, manifest={"check": "gpu"})
            re = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                      trust_remote_code=(g == "attn")).to(loaded.device)
            with torch.inference_mode(), pruned(loaded.model, g, blocks):
                ref = loaded.model(held[:2].to(loaded.device)).logits.float()
            with torch.inference_mode():
                got = re.to(loaded.dtype)(held[:2].to(loaded.device)).logits.float()
            m["export"][g] = {"max_abs_logit_diff": float((ref - got).abs().max()),
                              "logit_scale": float(ref.abs().max())}
            del re
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, help="folder with a tokenizer (and config.json)")
    p.add_argument("--config", default=None, help="model config (default: the tokenizer folder's)")
    p.add_argument("--out", default=None, help="write the measurements and checks here as JSON")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default; auto must pick cuda + bf16) or cpu (auto: cpu + fp32)")
    p.add_argument("--calibration", default="builtin:licenses",
                   help="calibration source (any spec the app takes; default builtin:licenses)")
    p.add_argument("--samples", type=int, default=16, help="calibration windows N")
    p.add_argument("--seqlen", type=int, default=128, help="tokens per window T")
    p.add_argument("--new-tokens", type=int, default=8, help="greedy tokens per generation")
    p.add_argument("--speed-repeats", type=int, default=5,
                   help="timing rounds of the speed figures (0: skip them; they decide nothing)")
    a = p.parse_args(argv)

    m = measure(a)
    expected_dtype = "torch.bfloat16" if a.device == "cuda" else "torch.float32"
    checks = evaluate(m, expected_device=a.device, expected_dtype=expected_dtype)
    text, status = summarize(checks)
    report = {"measurements": m, "checks": [asdict(c) for c in checks], "ok": status == 0}
    print(text)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
