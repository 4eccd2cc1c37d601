"""The service layer: analysis requests, the results cache, and multi-calibration runs."""

import json

import pytest

from analysis.profile import ProfileCache
from analysis.settings import AnalysisRequest, CalibrationSettings, EstimatorSettings, ModelSettings
from entrodrop import service
from pruning.export import MANIFEST_NAME

OPTS = EstimatorSettings(bins=8, knn_k=3, renyi_alpha=2.0, skip_first=1, batch_size=4)


def _request(model_dir, specs=("builtin:random",), **kw):
    cals = tuple(CalibrationSettings(s, samples=6, seqlen=16, seed=1) for s in specs)
    return AnalysisRequest(ModelSettings(str(model_dir), device="cpu"), cals, OPTS, **kw)


def test_profile_layout(tiny_llama_dir, isolated_cache):
    res = service.analyze(_request(tiny_llama_dir))
    p = res.to_json()
    L = p["model"]["num_layers"]
    assert L == 4 and p["model"]["architecture"] == "LlamaForCausalLM"
    assert p["calibration"]["samples"] == 6 and p["calibration"]["seqlen"] == 16
    assert p["settings"] == {"bins": 8, "knn_k": 3, "renyi_alpha": 2.0, "skip_first": 1}
    for est in ("bucket", "knn", "renyi"):
        assert len(p["entropy_curve"][est]) == L + 1
        for g in ("layer", "attn"):
            assert len(p["blocks"][g]["delta_h"][est]) == L
        # dH of a layer block is the step of the curve.
        curve = p["entropy_curve"][est]
        for i, dh in enumerate(p["blocks"]["layer"]["delta_h"][est]):
            assert dh == pytest.approx(curve[i + 1] - curve[i], abs=1e-6)
        assert 0 <= p["s_start"][est] <= L // 2
    assert len(p["blocks"]["layer"]["cosine"]) == L and len(p["blocks"]["attn"]["cosine"]) == L
    assert len(p["sink"]["max_norm"]) == L + 1 and len(p["sink"]["max_norm"][0]) == 16
    assert p["runs"][0]["calibration"] == p["calibration"]
    json.dumps(p)  # plain JSON


def test_second_request_comes_from_cache_without_loading(tiny_llama_dir, isolated_cache):
    first = service.analyze(_request(tiny_llama_dir))
    assert first.from_cache == [False]

    def no_loading(_settings):
        raise AssertionError("the model must not be loaded on a cache hit")

    second = service.analyze(_request(tiny_llama_dir), get_model=no_loading)
    assert second.from_cache == [True]
    assert second.runs[0] == first.runs[0]
    assert any("loaded from cache" in m for m in second.messages)


def test_other_settings_miss_the_cache(tiny_llama_dir, isolated_cache):
    service.analyze(_request(tiny_llama_dir))
    req = _request(tiny_llama_dir)
    other = AnalysisRequest(req.model, req.calibrations,
                            EstimatorSettings(bins=9, knn_k=3, renyi_alpha=2.0), True)
    assert service.analyze(other).from_cache == [False]


@pytest.mark.parametrize("damage", ["truncate", "edit", "old_schema"])
def test_corrupt_cache_entry_is_reported_and_recomputed(tiny_llama_dir, isolated_cache, damage):
    first = service.analyze(_request(tiny_llama_dir))
    files = list((isolated_cache / "profiles").glob("*.json"))
    assert len(files) == 1
    entry = files[0]
    text = entry.read_text()
    if damage == "truncate":
        entry.write_text(text[: len(text) // 2])
    elif damage == "edit":
        data = json.loads(text)
        data["payload"]["entropy_curve"]["bucket"][0] += 1.0
        entry.write_text(json.dumps(data))
    else:
        data = json.loads(text)
        data["schema_version"] = 0
        entry.write_text(json.dumps(data))
    again = service.analyze(_request(tiny_llama_dir))
    assert again.from_cache == [False]
    assert any("recomputing" in m for m in again.messages)
    assert again.runs[0].entropy_curve == first.runs[0].entropy_curve
    assert ProfileCache().get(entry.stem) is not None  # rewritten, valid again


def test_several_calibration_sets_give_one_run_each(tiny_llama_dir, isolated_cache):
    res = service.analyze(_request(tiny_llama_dir, specs=("builtin:random", "builtin:selfgen")))
    assert [r.calibration["spec"] for r in res.runs] == ["builtin:random", "builtin:selfgen"]
    assert res.runs[0].calibration["fingerprint"] != res.runs[1].calibration["fingerprint"]
    assert res.to_json()["calibration"]["spec"] == "builtin:random"


def test_decision_and_manifest(tiny_llama_dir, isolated_cache, tmp_path):
    p = service.analyze(_request(tiny_llama_dir)).runs[0]
    plan = service.stage_plan(p, policy="reference")
    d = service.decision(p, "attn", "knn", 1, plan)
    assert d.order and set(d.order) <= {2}  # L=4: 0, 1 and 3 are frozen
    assert d.blocks == d.order[:1]
    # The manifest is built by the service's export (the one builder, pruning.manifest).
    loaded = service.load(ModelSettings(str(tiny_llama_dir), device="cpu"))
    out = service.export_blocks(loaded, p, d, tmp_path / "export")
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert m["blocks"] == list(d.blocks) and m["granularity"] == "attn"
    assert len(m["scores"]) == 4


def test_a_vllm_layout_cannot_be_written_as_gguf_and_says_so_in_one_line():
    from analysis.errors import EntroDropError
    from entrodrop.service.blocks import check_layout_format

    check_layout_format("vllm", "hf")
    check_layout_format("transformers", "gguf")
    with pytest.raises(EntroDropError, match="cannot be written as GGUF") as err:
        check_layout_format("vllm", "gguf")
    assert "\n" not in str(err.value)
