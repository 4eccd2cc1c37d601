import json
import math
from contextlib import contextmanager, nullcontext

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from pruning.apply import pruned
from pruning.evaluate import (
    EvaluationError,
    Quality,
    Speed,
    count_parameters,
    evaluate_quality,
    generate_side_by_side,
    measure_speed,
    quality_curves,
    token_kl,
    weight_bytes,
)
from tests.tiny_models import MODEL_TYPES, VOCAB, tiny_config, tiny_ids, tiny_model


@contextmanager
def scaled_lm_head(model, factor=3.0):
    """Changes every next-token distribution (sharper) without touching the argmax."""
    saved = model.lm_head.weight.detach().clone()
    with torch.no_grad():
        model.lm_head.weight.mul_(factor)
    try:
        yield
    finally:
        with torch.no_grad():
            model.lm_head.weight.copy_(saved)


@contextmanager
def zeroed_mlp(model, layer_idx=1):
    down = model.model.layers[layer_idx].mlp.down_proj
    saved = down.weight.detach().clone()
    with torch.no_grad():
        down.weight.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            down.weight.copy_(saved)


def reference_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


# ---------------------------------------------------------------------------- quality


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_unpruned_and_noop_figures(model_type):
    model = tiny_model(model_type)
    ids = tiny_ids(batch=3, seqlen=16)
    res = evaluate_quality(model, ids, {"noop": nullcontext}, batch_size=2)
    logits = reference_logits(model, ids)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB).float(), ids[:, 1:].reshape(-1))
    for name in ("unpruned", "noop"):
        q = res[name]
        assert q.perplexity == pytest.approx(math.exp(float(ce)), rel=1e-5)
        assert q.kl == pytest.approx(0.0, abs=1e-6)
        assert q.top1 == 1.0
        assert q.tokens == 3 * 15
    assert res["unpruned"].kl == 0.0


def test_kl_and_top1_match_hand_computation():
    # Random init gives near-uniform outputs; a larger lm_head spreads them so KL is sizeable.
    model = tiny_model("llama", seed=1)
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    ids = tiny_ids(batch=2, seqlen=20, seed=1)
    res = evaluate_quality(model, ids, {"zero_mlp": lambda: zeroed_mlp(model)}, batch_size=2)
    ref = reference_logits(model, ids)[:, :-1]
    with zeroed_mlp(model):
        var = reference_logits(model, ids)[:, :-1]
    kl = F.kl_div(var.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                  reduction="none").sum(-1).mean()
    top1 = (var.argmax(-1) == ref.argmax(-1)).float().mean()
    ce = F.cross_entropy(var.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    q = res["zero_mlp"]
    assert q.kl > 1e-3
    assert q.kl == pytest.approx(float(kl), rel=1e-5)
    assert q.top1 < 1.0
    assert q.top1 == pytest.approx(float(top1))
    assert q.perplexity == pytest.approx(math.exp(float(ce)), rel=1e-5)
    # The context restored the model: the reference figures are the model's own.
    assert reference_logits(model, ids)[:, :-1].equal(ref)


def test_sharper_distribution_gives_kl_but_same_argmax(llama):
    res = evaluate_quality(llama, tiny_ids(2, 12), {"sharp": lambda: scaled_lm_head(llama)})
    assert res["sharp"].kl > 1e-3
    assert res["sharp"].top1 == 1.0
    assert res["sharp"].perplexity != pytest.approx(res["unpruned"].perplexity)


def test_token_kl_zero_probability_terms():
    log_p = torch.log(torch.tensor([[1.0, 0.0, 0.0]]))  # contains -inf
    log_q = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert torch.allclose(token_kl(log_p, log_q), torch.tensor([math.log(2.0)]))
    assert token_kl(log_q, log_q).item() == 0.0


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batch_size_does_not_change_figures(llama, batch_size):
    ids = tiny_ids(batch=5, seqlen=12, seed=2)
    variants = {"zero_mlp": lambda: zeroed_mlp(llama)}
    one = evaluate_quality(llama, ids, variants, batch_size=5)
    other = evaluate_quality(llama, ids, variants, batch_size=batch_size)
    for name in one:
        for field in ("perplexity", "kl", "top1"):
            assert getattr(other[name], field) == pytest.approx(getattr(one[name], field), rel=1e-5)
        assert other[name].tokens == one[name].tokens == 5 * 11


def test_streaming_sums_combine_like_separate_runs(llama):
    # Memory is bounded by construction: only per-batch tensors exist and running sums cross
    # batches. Hence N=8 figures are the token-weighted combination of four N=2 runs.
    ids = tiny_ids(batch=8, seqlen=10, seed=3)
    variants = {"zero_mlp": lambda: zeroed_mlp(llama)}
    whole = evaluate_quality(llama, ids, variants, batch_size=2)
    parts = [evaluate_quality(llama, ids[i:i + 2], variants, batch_size=2) for i in (0, 2, 4, 6)]
    for name in whole:
        kl = sum(p[name].kl for p in parts) / 4
        nll = sum(math.log(p[name].perplexity) for p in parts) / 4
        assert whole[name].kl == pytest.approx(kl, rel=1e-6)
        assert math.log(whole[name].perplexity) == pytest.approx(nll, rel=1e-6)
        assert whole[name].tokens == 8 * 9


def test_reference_runs_once_per_batch_and_progress(llama):
    calls = []
    handle = llama.register_forward_pre_hook(lambda *_: calls.append(1))
    seen = []
    try:
        evaluate_quality(llama, tiny_ids(5, 8), {"a": nullcontext, "b": nullcontext,
                                                 "c": lambda: scaled_lm_head(llama)},
                         batch_size=2, progress=lambda done, total: seen.append((done, total)))
    finally:
        handle.remove()
    assert len(calls) == 3 * (1 + 3)  # 3 batches x (reference + 3 variants)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_quality_json_safe():
    q = Quality(perplexity=math.inf, kl=0.5, top1=0.25, tokens=10)
    d = q.to_dict()
    assert d == {"perplexity": None, "kl": 0.5, "top1": 0.25, "tokens": 10}
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=torch.arange(10)), r"\[N, T\]"),
    (dict(input_ids=torch.ones(2, 1, dtype=torch.long)), "T >= 2"),
    (dict(input_ids=torch.ones(2, 4)), "integer token ids"),
    (dict(input_ids=torch.full((2, 4), VOCAB)), "vocabulary"),
    (dict(variants={"unpruned": nullcontext}), "reserved"),
    (dict(variants={"x": nullcontext()}), "callable"),
    (dict(batch_size=0), "batch_size"),
])
def test_evaluate_quality_bad_input(llama, kwargs, match):
    args = dict(input_ids=tiny_ids(2, 8), variants={"x": nullcontext}) | kwargs
    batch_size = args.pop("batch_size", 4)
    with pytest.raises(EvaluationError, match=match):
        evaluate_quality(llama, args["input_ids"], args["variants"], batch_size=batch_size)


# ---------------------------------------------------------------------------- curves


@pytest.mark.parametrize("granularity", ["layer", "attn"])
def test_quality_curves_rows(llama, granularity):
    ids = tiny_ids(3, 10)
    orders = {"knn": [2, 1, 3], "cosine": [1, 2, 3]}
    rows = quality_curves(llama, ids, granularity, orders, [1, 2, 2], batch_size=2)
    assert len(rows) == 2 * 3  # K = 0, 1, 2 for each criterion; duplicate K counted once
    assert [(r["criterion"], r["k"]) for r in rows] == [
        ("knn", 0), ("knn", 1), ("knn", 2), ("cosine", 0), ("cosine", 1), ("cosine", 2)]
    unpruned = evaluate_quality(llama, ids, {}, batch_size=2)["unpruned"]
    for r in rows:
        assert set(r) == {"criterion", "k", "perplexity", "kl", "top1"}
        if r["k"] == 0:
            assert r["perplexity"] == pytest.approx(unpruned.perplexity, rel=1e-6)
            assert (r["kl"], r["top1"]) == (0.0, 1.0)
        else:
            assert r["kl"] > 0
    by_key = {(r["criterion"], r["k"]): r for r in rows}
    # Both criteria prune {1, 2} at K=2: same variant, same figures.
    assert by_key[("knn", 2)] == by_key[("cosine", 2)] | {"criterion": "knn"}
    with pruned(llama, granularity, [2]):
        direct = evaluate_quality(llama, ids, {}, batch_size=2)["unpruned"]
    assert by_key[("knn", 1)]["perplexity"] == pytest.approx(direct.perplexity, rel=1e-5)


def test_quality_curves_shares_the_reference(llama):
    calls = []
    handle = llama.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        quality_curves(llama, tiny_ids(2, 8), "attn", {"a": [1, 2], "b": [1, 3]}, [1, 2],
                       batch_size=2)
    finally:
        handle.remove()
    # One batch: the reference once, then the distinct sets {1}, {1,2}, {1,3}.
    assert len(calls) == 1 + 3


@pytest.mark.parametrize("granularity, orders, ks, match", [
    ("width", {"a": [1]}, [1], "granularity"),
    ("attn", {}, [1], "orders is empty"),
    ("attn", {"a": [1, 2]}, [3], "larger than"),
    ("attn", {"a": [1, 2]}, [-1], "K must be"),
    ("attn", {"a": [1, 2]}, [1.5], "K must be"),
])
def test_quality_curves_bad_input(llama, granularity, orders, ks, match):
    with pytest.raises(EvaluationError, match=match):
        quality_curves(llama, tiny_ids(2, 8), granularity, orders, ks)


# ---------------------------------------------------------------------------- speed


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


def test_count_parameters_dedupes_shared_storage():
    class Tied(nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.a = nn.Linear(4, 3, bias=False, dtype=dtype)
            self.b = nn.Linear(4, 3, bias=True, dtype=dtype)
            self.b.weight = nn.Parameter(self.a.weight.data)  # distinct object, same storage

    tied = Tied(torch.float32)
    assert len(list(tied.parameters())) == 3
    assert count_parameters(tied) == 12 + 3
    assert weight_bytes(tied) == 4 * (12 + 3)
    assert weight_bytes(Tied(torch.float16)) == 2 * (12 + 3)

    config = tiny_config("llama")
    config.tie_word_embeddings = True
    model = AutoModelForCausalLM.from_config(config)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    untied = tiny_model("llama")
    assert count_parameters(untied) - count_parameters(model) == VOCAB * config.hidden_size


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
