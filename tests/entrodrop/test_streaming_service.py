"""The service's layer-streaming mode gives the in-memory profiles, and `auto` picks it
only when the weights would not fit."""

import math

import pytest

from analysis.profile import ProfileCache
from analysis.settings import (
    AnalysisRequest,
    CalibrationSettings,
    EstimatorSettings,
    ModelSettings,
    SettingsError,
)
from entrodrop import service


def _request(spec, load, cal="builtin:random", samples=4, seqlen=24):
    return AnalysisRequest(ModelSettings(spec, device="cpu", load=load),
                           (CalibrationSettings(cal, samples, seqlen),),
                           EstimatorSettings(knn_k=3, batch_size=3), use_cache=False)


def _close(a, b, rel=1e-5):
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            assert x is None and y is None
        else:
            assert math.isclose(x, y, rel_tol=rel, abs_tol=1e-6), (x, y)


def _assert_same_profile(stream, memory):
    assert stream.num_layers == memory.num_layers
    assert stream.model["architecture"] == memory.model["architecture"]
    assert stream.model["identity"] == memory.model["identity"]
    assert stream.calibration["fingerprint"] == memory.calibration["fingerprint"]
    for e in ("bucket", "knn", "renyi"):
        _close(stream.entropy_curve[e], memory.entropy_curve[e])
        for g in ("layer", "attn"):
            _close(stream.scores(g, e), memory.scores(g, e))
    for g in ("layer", "attn"):
        _close(stream.scores(g, "cosine"), memory.scores(g, "cosine"))
        _close(stream.scores(g, "angular"), memory.scores(g, "angular"))
    assert len(stream.angular_spans) == len(memory.angular_spans) == min(stream.num_layers, 16)
    for row_s, row_m in zip(stream.angular_spans, memory.angular_spans, strict=True):
        _close(row_s, row_m)
    assert stream.s_start == memory.s_start


def test_streamed_analysis_equals_in_memory_analysis(tiny_llama_dir):
    memory = service.analyze(_request(str(tiny_llama_dir), "memory")).runs[0]
    result = service.analyze(_request(str(tiny_llama_dir), "stream"))
    assert any("layer streaming" in m for m in result.messages)
    _assert_same_profile(result.runs[0], memory)


def test_auto_keeps_a_small_model_in_memory_and_says_why(tiny_llama_dir):
    plan = service.load_plan(ModelSettings(str(tiny_llama_dir), device="cpu"))
    assert plan.mode == "memory" and plan.requested == "auto"
    assert 0 < plan.weight_bytes < plan.free_bytes
    assert plan.describe().startswith("whole model in memory:")
    forced = service.load_plan(ModelSettings(str(tiny_llama_dir), device="cpu", load="stream"))
    assert forced.mode == "stream" and "streaming was asked for" in forced.describe()


def test_streaming_refuses_selfgen_with_a_way_out(tiny_llama_dir):
    with pytest.raises(SettingsError, match="builtin:selfgen.*--load memory"):
        service.analyze(_request(str(tiny_llama_dir), "stream", cal="builtin:selfgen"))


def test_streamed_and_in_memory_profiles_share_one_cache_entry(tiny_llama_dir, tmp_path):
    cache = ProfileCache(tmp_path)
    req = _request(str(tiny_llama_dir), "stream")
    first = service.analyze(AnalysisRequest(req.model, req.calibrations, req.estimators), cache=cache)
    assert first.from_cache == [False]
    memory = AnalysisRequest(ModelSettings(str(tiny_llama_dir), device="cpu", load="memory"),
                             req.calibrations, req.estimators)
    again = service.analyze(memory, cache=cache)
    assert again.from_cache == [True] and again.runs[0] == first.runs[0]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["demo:smollm2-135m", "demo:gemma3-270m"])
def test_demo_model_streamed_from_gguf_equals_in_memory(spec):
    memory = service.analyze(_request(spec, "memory", cal="builtin:licenses", samples=4, seqlen=64)).runs[0]
    stream = service.analyze(_request(spec, "stream", cal="builtin:licenses", samples=4, seqlen=64)).runs[0]
    _assert_same_profile(stream, memory)


def test_streamed_model_summary_and_savings_equal_the_loaded_model(tmp_path):
    from tests.tiny_models import save_tiny, tiny_tokenizer

    folder = save_tiny("llama", tmp_path / "m")
    tiny_tokenizer().save_pretrained(folder)
    memory = service.load(ModelSettings(str(folder), device="cpu", load="memory"))
    streamed = service.load(ModelSettings(str(folder), device="cpu", load="stream"))
    assert isinstance(streamed, service.StreamedModel)
    a, b = service.model_summary(streamed), service.model_summary(memory)
    assert (a["load"], b["load"]) == ("stream", "memory")
    assert {k: v for k, v in a.items() if k != "load"} == {k: v for k, v in b.items() if k != "load"}
    for granularity, blocks in (("layer", [1, 2]), ("attn", [0, 3])):
        assert (service.parameter_savings(streamed, granularity, blocks)
                == service.parameter_savings(memory, granularity, blocks))
    with pytest.raises(service.WholeModelNeeded, match="measuring speed needs the whole model"):
        service.speed(streamed, "layer", [1])


def test_tied_embeddings_are_counted_once_in_a_streamed_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from tests.tiny_models import tiny_config, tiny_tokenizer

    config = tiny_config("llama")
    config.tie_word_embeddings = True
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "tied")
    tiny_tokenizer().save_pretrained(tmp_path / "tied")
    memory = service.load(ModelSettings(str(tmp_path / "tied"), device="cpu", load="memory"))
    streamed = service.load(ModelSettings(str(tmp_path / "tied"), device="cpu", load="stream"))
    assert (service.model_summary(streamed)["parameters"]
            == service.model_summary(memory)["parameters"])


def test_greedy_search_on_a_streamed_model_equals_the_loaded_model(tiny_llama_dir):
    from pruning.stages import plan_stages
    cal = CalibrationSettings("builtin:random", 4, 16)
    plan = plan_stages(4, policy="manual", s_start=1, allow_last=True)
    found = {}
    for load in ("memory", "stream"):
        loaded = service.load(ModelSettings(str(tiny_llama_dir), device="cpu", load=load))
        ids = service.selection_windows(cal, loaded, 2)
        messages = []
        found[load] = service.greedy_search(loaded, ids, "attn", plan, steps=2,
                                            progress=lambda f, m, out=messages: out.append(m))
        assert any("s left" in m for m in messages)
    assert found["stream"].order == found["memory"].order
    for a, b in zip(found["stream"].perplexity, found["memory"].perplexity, strict=True):
        assert math.isclose(a, b, rel_tol=1e-4)
    assert math.isclose(found["stream"].base_perplexity, found["memory"].base_perplexity,
                        rel_tol=1e-4)
