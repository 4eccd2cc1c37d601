import json
import math
from contextlib import contextmanager, nullcontext

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from analysis.architectures import count_parameters
from pruning.apply import pruned
from pruning.evaluate import EvaluationError
from pruning.speed import Speed, generate_side_by_side, measure_speed
from tests.tiny_models import VOCAB, reference_logits, tiny_model


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt2"])
def test_measure_speed_layer_pruning(model_type):
    model = tiny_model(model_type)
    speed = measure_speed(model, lambda: pruned(model, "layer", [1, 2]), prompt_len=8,
                          new_tokens=3, warmup=1, repeats=2)
    numbers = [v for v in speed.to_dict().values() if not isinstance(v, str)]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in numbers)
    assert speed.prefill_ratio == pytest.approx(
        speed.prefill_tokens_per_s_pruned / speed.prefill_tokens_per_s_base)
    assert speed.decode_ratio == pytest.approx(
        speed.decode_ms_per_token_base / speed.decode_ms_per_token_pruned)
    assert speed.params_pruned < speed.params_base == count_parameters(model)
    assert speed.weight_bytes_pruned == 4 * speed.params_pruned
    assert speed.repeats == 2 and speed.device == "cpu"
    json.dumps(speed.to_dict(), allow_nan=False)


def test_measure_speed_attn_pruning_counts_fewer_params(llama):
    layer = llama.model.layers[1]
    attn_params = sum(p.numel() for p in layer.self_attn.parameters())
    speed = measure_speed(llama, lambda: pruned(llama, "attn", [1]), prompt_len=6,
                          new_tokens=2, warmup=0, repeats=1)
    assert speed.params_base - speed.params_pruned == attn_params
    assert count_parameters(llama) == speed.params_base  # restored


def test_measure_speed_with_a_hand_made_layer_removal(llama):
    @contextmanager
    def drop_last_layer():
        layers = llama.model.layers
        last = layers[-1]
        del layers[-1]
        llama.config.num_hidden_layers -= 1
        try:
            yield
        finally:
            layers.append(last)
            llama.config.num_hidden_layers += 1

    speed = measure_speed(llama, drop_last_layer, batch=2, prompt_len=5, new_tokens=2,
                          warmup=0, repeats=1)
    assert speed.params_base - speed.params_pruned == sum(
        p.numel() for p in llama.model.layers[-1].parameters())


@pytest.mark.parametrize("kwargs, match", [
    (dict(repeats=0), "repeats"),
    (dict(warmup=-1), "warmup"),
    (dict(prompt_len=250, new_tokens=10), "positions"),
    (dict(batch=True), "batch"),
])
def test_measure_speed_bad_input(llama, kwargs, match):
    with pytest.raises(EvaluationError, match=match):
        measure_speed(llama, nullcontext, **kwargs)


def test_speed_json_safe():
    s = Speed(1.0, 2.0, 2.0, 3.0, 1.5, 2.0, 10, 5, 40, 20, "cpu", 3)
    assert json.loads(json.dumps(s.to_dict(), allow_nan=False))["prefill_ratio"] == 2.0


# ---------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def word_tokenizer():
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab |= {f"w{i}": i for i in range(4, VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def test_generate_side_by_side(llama, word_tokenizer):
    out = generate_side_by_side(llama, word_tokenizer, "w5 w17 w42", nullcontext,
                                max_new_tokens=6)
    assert set(out) == {"unpruned", "pruned"}
    assert isinstance(out["unpruned"], str) and out["unpruned"]
    assert out["pruned"] == out["unpruned"]
    assert 1 <= len(out["unpruned"].split()) <= 6


def uncached_greedy(model, ids, steps):
    for _ in range(steps):
        nxt = reference_logits(model, ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


@pytest.mark.parametrize("granularity, blocks", [("attn", [0, 2]), ("layer", [0])])
def test_generate_side_by_side_matches_uncached_greedy(llama, word_tokenizer, granularity,
                                                       blocks):
    # The KV-cache loop must give what a full recomputation gives at every step, also
    # when the pruned block is the one whose cache slot sets the positions (block 0).
    prompt = "w9 w10"
    ids = word_tokenizer(prompt, return_tensors="pt")["input_ids"]
    expected = {"unpruned": uncached_greedy(llama, ids, 5)}
    with pruned(llama, granularity, blocks):
        expected["pruned"] = uncached_greedy(llama, ids, 5)
    out = generate_side_by_side(llama, word_tokenizer, prompt,
                                lambda: pruned(llama, granularity, blocks), max_new_tokens=5)
    for key, full in expected.items():
        assert out[key] == word_tokenizer.decode(full[0, 2:], skip_special_tokens=True)


def test_generate_side_by_side_pruned_differs(llama, word_tokenizer):
    out = generate_side_by_side(llama, word_tokenizer, "w5 w17 w42",
                                lambda: pruned(llama, "layer", [0, 1, 2]), max_new_tokens=8)
    assert out["pruned"] != out["unpruned"]


def test_generate_side_by_side_chat_needs_template(llama, word_tokenizer):
    with pytest.raises(EvaluationError, match="chat template"):
        generate_side_by_side(llama, word_tokenizer, "w5", nullcontext, chat=True)
