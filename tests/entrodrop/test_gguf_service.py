"""GGUF block exports through the service: a streamed model (tensor by tensor from its
checkpoint, never loaded whole) writes the same GGUF file as the model in memory."""

import gguf
import numpy as np
import torch
from transformers import AutoModelForCausalLM

from analysis.settings import AnalysisRequest, CalibrationSettings, EstimatorSettings, ModelSettings
from entrodrop import service
from tests.tiny_models import tiny_bpe_tokenizer, tiny_config


def test_streamed_and_in_memory_gguf_exports_are_identical(tmp_path):
    folder = tmp_path / "model"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("llama")).save_pretrained(folder)
    tiny_bpe_tokenizer().save_pretrained(folder)
    files = {}
    for load in ("memory", "stream"):
        settings = ModelSettings(str(folder), device="cpu", load=load)
        loaded = service.load(settings)
        profile = service.analyze(AnalysisRequest(
            settings, (CalibrationSettings("builtin:random", 4, 16),),
            EstimatorSettings(knn_k=3), use_cache=False), loaded=loaded).runs[0]
        chosen = service.decision(profile, "attn", "cosine", 2,
                                  service.stage_plan(profile, allow_last=True))
        out = service.export_blocks(loaded, profile, chosen, tmp_path / load, fmt="gguf",
                                    gguf_type="q8_0")
        files[load] = gguf.GGUFReader(out / "model.gguf")
    memory, streamed = files["memory"], files["stream"]
    assert isinstance(service.load(ModelSettings(str(folder), device="cpu", load="stream")),
                      service.StreamedModel)
    assert {t.name for t in memory.tensors} == {t.name for t in streamed.tensors}
    by_name = {t.name: t for t in streamed.tensors}
    for t in memory.tensors:
        assert t.tensor_type == by_name[t.name].tensor_type
        np.testing.assert_array_equal(np.asarray(t.data), np.asarray(by_name[t.name].data))
    heads = memory.fields["deci.attention.head_count_kv"].contents()
    assert heads == streamed.fields["deci.attention.head_count_kv"].contents()
    assert heads.count(0) == 2
