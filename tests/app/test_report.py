"""app/report.py: a complete, readable record (header, figures, tables), and nothing made
for other settings presented as if it belonged to these."""

from __future__ import annotations

import re

from analysis.settings import AnalysisRequest, CalibrationSettings, ModelSettings
from app import report
from app.logic.provenance import prune_stamp
from app.logic.runs import AnalysisRecord
from tests.app.sample import profile as _profile
from tests.app.sample import view as _view

SETTINGS = {"granularity": "attn", "criterion": "knn", "policy": "auto", "s_start": 0,
            "allow_last": False, "k": 2}


def _snapshot(**extra) -> dict:
    profile = _profile()
    request = AnalysisRequest(model=ModelSettings("tiny-model"),
                              calibrations=(CalibrationSettings("builtin:random", 8, 64, 3),))
    record = AnalysisRecord(key="k", request=request, runs=[profile], from_cache=[False])
    stamp = prune_stamp(_view(k=2), profile.spec)
    snap = {
        "analysis": record, "analysis_changes": [], "run_index": 0,
        "view_settings": dict(SETTINGS), "curve_estimators": ["knn"],
        "budget": {"rows": [{"criterion": "knn", "k": 2, "perplexity": 7.5, "kl": 0.25,
                             "top1": 0.8}], "skipped_ks": [6], "stamp": stamp},
        "savings": {"params_base": 2_000_000, "params_pruned": 1_500_000,
                    "bytes_base": 8 * 2**20, "bytes_pruned": 6 * 2**20,
                    "saved_fraction": 0.25, "stamp": stamp},
        "speed": {"prefill_tokens_per_s_base": 1000.0, "prefill_tokens_per_s_pruned": 1250.0,
                  "prefill_ratio": 1.25, "decode_ms_per_token_base": 20.0,
                  "decode_ms_per_token_pruned": 16.0, "decode_ratio": 1.25,
                  "device": "cpu", "repeats": 3, "stamp": stamp},
        "generation": {"unpruned": "Paris.", "pruned": "Paris, France.", "blocks": [3, 4],
                       "stamp": {**stamp, "prompt": "The capital", "tokens": 5}},
        "export": {"path": "/exports/tiny-attn-knn-k2", "granularity": "attn",
                   "blocks": [3, 4], "num_layers_before": 6, "num_layers_after": 6,
                   "parameters_before": 2_000_000, "parameters_after": 1_500_000,
                   "files": 5, "bytes": 6 * 2**20, "stamp": stamp},
        "width": {"qs": [0, 50, 100], "percentiles": {"taylor-ce": [[0.0, 1.0, 2.0]] * 6},
                  "quality": {"rows": [{"criterion": "taylor-ce", "ratio": 0.5,
                                        "perplexity": 9.0, "kl": 0.5, "top1": 0.7}],
                              "x_title": "fraction of neurons kept", "value": 0.5}},
        "width_export": {"path": "/exports/width-taylor-ce-keep0.50-n32", "criterion":
                         "taylor-ce", "kept": 32, "intermediate_size": 32, "files": 5,
                         "bytes": 2**20, "stamp": {"model": profile.spec}},
    }
    snap.update(extra)
    return snap


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_report_header_names_model_data_and_settings_as_a_table():
    text = report.build_html(_snapshot())
    header = text[text.index("What was analysed"):text.index("Calibration runs")]
    assert "<table>" in header and "tiny-model" in header
    assert "builtin:random" in header and "N = 8 × T = 64 tokens, seed 3" in header
    assert "attn / knn (baseline cosine)" in header and "2 of at most 3" in header
    assert "Stale" not in header
    # The raw record is kept, folded away, after the readable tables.
    assert text.index("<details>") > text.index("Parameter savings")


def test_report_holds_speed_savings_width_curves_export_and_generation():
    text = _text(report.build_html(_snapshot()))
    assert "1000 → 1250 tokens/s (1.25×)" in text and "20.0 → 16.0 ms/token" in text
    assert "2.00 M → 1.50 M (-25.0 %)" in text
    assert "Left out (cannot be pruned under this S_start): K = 6" in text
    assert "Width pruning: quality against the amount kept" in text
    assert "/exports/tiny-attn-knn-k2" in text and "/exports/width-taylor-ce-keep0.50-n32" in text
    assert "Paris, France." in text and "The capital" in text


def test_report_leaves_out_results_of_other_settings_and_marks_a_stale_analysis():
    snap = _snapshot(view_settings={**SETTINGS, "k": 1},
                     analysis_changes=["model tiny-model → /gone"])
    html = report.build_html(snap)
    text = _text(html)
    assert "Paris, France." not in text and "/exports/tiny-attn-knn-k2" not in text
    assert "1000 → 1250" not in text
    assert ("Left out, made for other settings than these: quality curves, parameter "
            "savings, speed, side-by-side text, export.") in text
    assert "Stale:" in text and "model tiny-model → /gone" in text


def test_report_keeps_a_width_export_across_prune_sets_but_not_across_models():
    other_k = _text(report.build_html(_snapshot(view_settings={**SETTINGS, "k": 1})))
    assert "/exports/width-taylor-ce-keep0.50-n32" in other_k
    snap = _snapshot()
    snap["width_export"] = {**snap["width_export"], "stamp": {"model": "another-model"}}
    text = _text(report.build_html(snap))
    assert "/exports/width-taylor-ce-keep0.50-n32" not in text
    assert "Left out, made for other settings than these: width export." in text


def _section(text: str, title: str) -> str:
    """The text of the report's section headed `title` (up to the next section)."""
    start = text.index(f"<h2>{title}</h2>")
    return " ".join(_text(text[start:text.index("</section>", start)]).split())


def _exported(at, key: str) -> dict:
    """What the page recorded about its export, without the settings stamp: the report
    then shows it whatever the sample snapshot's settings are."""
    return {k: v for k, v in at.session_state[key].items() if k != "stamp"}


def test_report_states_format_layout_and_sizes_of_every_export_kind(ui, tmp_path, monkeypatch,
                                                                    bpe_model_dir):
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(tmp_path / "exports"))
    monkeypatch.setenv("ENTRODROP_MODEL", str(bpe_model_dir))
    at = ui.attn_export_page(seed=57)
    ui.export_blocks(at, "blocks-gguf", fmt="gguf", gguf_type="q8_0")
    block_gguf = _exported(at, "export_result")
    ui.export_blocks(at, "blocks-vllm", layout="vllm")
    block_vllm = _exported(at, "export_result")
    ui.export_width(at, "width-gguf", fmt="gguf")  # keeps 32 of 64 neurons
    width_gguf = _exported(at, "width_export_result")

    page = report.build_html(_snapshot(export=block_gguf, width_export=width_gguf))
    width = _section(page, "Width export")
    assert "None" not in width and "?" not in width, width
    assert "Format gguf (one file), f16 weights, llama.cpp architecture llama" in width
    assert "Runs in llama.cpp" in width
    assert "Kept per layer 32 neurons (intermediate size 64 → 32)" in width
    assert re.search(r"Parameters \d+\.\d\d M → \d+\.\d\d M", width), width
    blocks = _section(page, "Export")
    assert "None" not in blocks and "?" not in blocks, blocks
    assert "Format gguf (one file), q8_0 weights, llama.cpp architecture deci" in blocks
    assert "Runs in llama.cpp" in blocks and "Layers 6 of 6" in blocks

    blocks = _section(report.build_html(_snapshot(export=block_vllm)), "Export")
    assert "Format hf (Hugging Face folder)" in blocks
    assert "Runs in vLLM and transformers (layout vllm)" in blocks
    assert f"Removed attn blocks {block_vllm['blocks']}" in blocks
