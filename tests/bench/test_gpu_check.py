"""bench/gpu_check.py: every comparison decides the exit status.

The decisions (``evaluate`` / ``summarize``) are pure, so they are fed made-up
measurements that pass and that fail; ``--device cpu`` runs the whole script end to end
on a tiny random llama.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_gpu_check():
    # bench/ is not a package: import the script by path.
    spec = importlib.util.spec_from_file_location("bench_gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gc = _load_gpu_check()

CUDA = {"expected_device": "cuda", "expected_dtype": "torch.bfloat16"}


def good() -> dict:
    """Measurements of a healthy GPU run, shaped as ``measure`` returns them."""
    fp32 = {"bucket": [1506.0, 1512.8, 1510.0, 1491.5],
            "knn": [-1252.5, -492.3, 3.1, 87.2],  # crosses zero, as the real knn curve does
            "renyi": [0.48, 0.50, 0.50, 0.45]}
    bf16 = {est: [v * (1 + 1e-4) for v in curve] for est, curve in fp32.items()}
    return {
        "auto": {"device": "cuda:0", "dtype": "torch.bfloat16"},
        "curves": {"bf16": bf16, "fp32": fp32},
        "nonfinite_blocks_bf16": {"layer": [], "attn": []},
        "device_map": {"devices": ["0"], "curves": copy.deepcopy(bf16)},
        "generate": {
            g: {"steps": 8, "first_mismatch": None, "mismatch_margin": None,
                "max_abs_logit_diff": 0.024, "logit_scale": 2.3}
            for g in ("layer", "attn")
        },
        "quality": {"layer_k4": {"perplexity": 5.4e4, "kl": 0.019, "top1": 0.38, "tokens": 1016},
                    "attn_k4": {"perplexity": 5.3e4, "kl": 0.017, "top1": 0.39, "tokens": 1016}},
        "export": {g: {"max_abs_logit_diff": 0.034, "logit_scale": 2.4} for g in ("layer", "attn")},
        "info": {"analysis_bf16_seconds": "1.23", "speed_layer_k4": {"prefill_ratio": 1.2}},
    }


def statuses(checks) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def test_a_healthy_gpu_run_passes_every_check():
    checks = gc.evaluate(good(), **CUDA)
    text, status = gc.summarize(checks)

    assert status == 0, text
    assert {c.status for c in checks} == {"PASS", "INFO"}, text
    assert "FAIL" not in text
    assert text.splitlines()[-1] == "SUMMARY: 15 passed, 0 failed, 0 skipped"
    # Every comparison is there, with what it was compared against.
    for name in ("auto_device_dtype", "bf16_vs_fp32_curve_bucket", "bf16_vs_fp32_curve_knn",
                 "bf16_vs_fp32_curve_renyi", "nonfinite_blocks_bf16", "device_map_auto_placement",
                 "device_map_auto_curves", "generate_layer_cache_logits",
                 "generate_attn_cache_tokens", "quality_layer_k4_finite",
                 "export_attn_reload_logits"):
        line = next(ln for ln in text.splitlines() if f" {name}: " in ln)
        assert line.startswith("PASS") and "[" in line, line


def _set(path: str, value):
    def mutate(m: dict) -> None:
        *parents, leaf = path.split(".")
        node = m
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return mutate


def _bf16_curve(est: str, change):
    """Change the bf16 curve (and the device_map run's, which must equal it) from fp32's."""
    def mutate(m: dict) -> None:
        m["curves"]["bf16"][est] = change(list(m["curves"]["fp32"][est]))
        m["device_map"]["curves"][est] = list(m["curves"]["bf16"][est])
    return mutate


def _scale_curve(est: str, factor: float):
    return _bf16_curve(est, lambda curve: [v * factor for v in curve])


def _null_point(curve: list) -> list:
    curve[2] = None
    return curve


@pytest.mark.parametrize(
    ("failing", "mutate"),
    [
        ("auto_device_dtype", _set("auto.device", "cpu")),
        ("auto_device_dtype", _set("auto.dtype", "torch.float16")),
        ("bf16_vs_fp32_curve_bucket", _scale_curve("bucket", 1 + 2 * gc.CURVE_REL_TOL["bucket"])),
        ("bf16_vs_fp32_curve_renyi", _scale_curve("renyi", 1 - 2 * gc.CURVE_REL_TOL["renyi"])),
        ("bf16_vs_fp32_curve_knn", _scale_curve("knn", 1 + 2 * gc.CURVE_REL_TOL["knn"])),
        ("bf16_vs_fp32_curve_knn", _bf16_curve("knn", _null_point)),  # null in bf16 only
        ("nonfinite_blocks_bf16", _set("nonfinite_blocks_bf16.attn", [7])),
        ("device_map_auto_placement", _set("device_map.devices", ["0", "cpu"])),
        ("device_map_auto_placement", _set("device_map.devices", [])),
        ("device_map_auto_curves", _set("device_map.curves.renyi.1", 0.5000001)),
        ("generate_layer_cache_logits", _set("generate.layer.max_abs_logit_diff", 0.5)),
        ("generate_attn_cache_logits", _set("generate.attn.max_abs_logit_diff", float("nan"))),
        ("generate_attn_cache_tokens", lambda m: m["generate"]["attn"].update(
            first_mismatch=3, mismatch_margin=0.9)),  # not a near-tie: a real mismatch
        ("quality_layer_k4_finite", _set("quality.layer_k4.perplexity", None)),
        ("quality_attn_k4_finite", _set("quality.attn_k4.kl", float("inf"))),
        ("export_layer_reload_logits", _set("export.layer.max_abs_logit_diff", 0.3)),
        ("export_attn_reload_logits", _set("export.attn.logit_scale", 0.0)),
    ],
)
def test_each_comparison_out_of_tolerance_fails_the_run(failing, mutate):
    m = good()
    mutate(m)
    checks = gc.evaluate(m, **CUDA)
    text, status = gc.summarize(checks)

    assert status == 1, text
    assert [c.name for c in checks if c.status == "FAIL"] == [failing], text
    assert text.splitlines()[-1].endswith(f"1 failed, 0 skipped (failed: {failing})")


def test_values_at_the_tolerance_pass_and_just_above_fail():
    m = good()
    scale = m["export"]["layer"]["logit_scale"]
    m["export"]["layer"]["max_abs_logit_diff"] = gc.LOGIT_REL_TOL * scale
    assert statuses(gc.evaluate(m, **CUDA))["export_layer_reload_logits"] == "PASS"
    m["export"]["layer"]["max_abs_logit_diff"] = gc.LOGIT_REL_TOL * scale * 1.01
    assert statuses(gc.evaluate(m, **CUDA))["export_layer_reload_logits"] == "FAIL"


def test_a_token_flip_at_a_near_tie_is_rounding_not_a_failure():
    m = good()
    gen = m["generate"]["layer"]
    tie = gc.NEAR_TIE_FACTOR * gc.LOGIT_REL_TOL * gen["logit_scale"]
    gen.update(first_mismatch=5, mismatch_margin=0.5 * tie)
    text, status = gc.summarize(gc.evaluate(m, **CUDA))
    assert status == 0, text
    assert "first differs at step 5 of 8" in text


def test_several_failures_are_all_reported():
    m = good()
    m["auto"]["dtype"] = "torch.float32"
    m["export"]["attn"]["max_abs_logit_diff"] = 1.0
    text, status = gc.summarize(gc.evaluate(m, **CUDA))
    assert status == 1
    assert text.count("\nFAIL") + text.startswith("FAIL") == 2, text
    assert "2 failed" in text and "auto_device_dtype, export_attn_reload_logits" in text


def test_without_cuda_the_device_map_checks_are_skipped_not_passed():
    m = good()
    m["auto"] = {"device": "cpu", "dtype": "torch.float32"}
    m["device_map"] = None
    checks = gc.evaluate(m, expected_device="cpu", expected_dtype="torch.float32")
    text, status = gc.summarize(checks)
    assert status == 0, text
    assert statuses(checks)["device_map_auto_curves"] == "SKIP"
    assert text.splitlines()[-1] == "SUMMARY: 13 passed, 0 failed, 2 skipped"


def test_curve_drift_is_measured_against_the_curves_scale_not_per_point():
    # Near a zero crossing a per-point relative difference explodes; the scale-relative
    # one does not, while a real drift of the whole curve still shows.
    ref = [-1000.0, -10.0, 0.001, 50.0]
    assert gc.curve_rel_diff([-1000.0, -10.0, 0.002, 50.0], ref) == pytest.approx(1e-6)
    assert gc.curve_rel_diff([-900.0, -9.0, 0.001, 45.0], ref) == pytest.approx(0.1)
    assert gc.curve_rel_diff(ref, ref) == 0.0
    assert gc.curve_rel_diff([None, 1.0], [None, 1.0]) == 0.0
    assert gc.curve_rel_diff([None, 1.0], [2.0, 1.0]) == float("inf")
    assert gc.curve_rel_diff([1.0], [1.0, 2.0]) == float("inf")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """gpu_check.py --device cpu on a tiny random llama, with text of varied words: the
    tiny word-level tokenizer maps the builtin license text to mostly <unk>, whose
    duplicate tokens differ only below bf16's precision."""
    from tests.tiny_models import save_tiny, tiny_tokenizer

    work = tmp_path_factory.mktemp("gpu-check")
    folder = save_tiny("llama", work / "tiny")
    words = [w for w in tiny_tokenizer().get_vocab() if not w.startswith("<")]
    rng = random.Random(0)
    text = work / "words.txt"
    text.write_text("\n".join(" ".join(rng.choice(words) for _ in range(60)) for _ in range(60)))
    out = work / "result.json"
    status = gc.main(["--tokenizer", str(folder), "--device", "cpu", "--calibration", str(text),
                      "--samples", "4", "--seqlen", "48", "--new-tokens", "6",
                      "--speed-repeats", "0", "--out", str(out)])
    return status, json.loads(out.read_text())


def test_cpu_run_on_a_tiny_llama_passes_end_to_end(tiny_run, capsys):
    status, report = tiny_run
    checks = {c["name"]: c for c in report["checks"]}
    assert status == 0, json.dumps(report["checks"], indent=1)
    assert report["ok"] is True
    assert checks["auto_device_dtype"]["value"] == "cpu torch.float32"
    assert checks["device_map_auto_curves"]["status"] == "SKIP"
    assert {c["status"] for c in report["checks"]} == {"PASS", "SKIP", "INFO"}
    m = report["measurements"]
    assert set(m["generate"]) == {"layer", "attn"} and set(m["export"]) == {"layer", "attn"}


def test_cpu_run_measurements_out_of_tolerance_fail(tiny_run):
    _, report = tiny_run
    m = report["measurements"]
    m["export"]["attn"]["max_abs_logit_diff"] = m["export"]["attn"]["logit_scale"]  # 100% off
    m["curves"]["bf16"]["bucket"] = [2 * v for v in m["curves"]["fp32"]["bucket"]]
    text, status = gc.summarize(
        gc.evaluate(m, expected_device="cpu", expected_dtype="torch.float32"))
    assert status == 1
    assert "FAIL  export_attn_reload_logits" in text
    assert "FAIL  bf16_vs_fp32_curve_bucket" in text
