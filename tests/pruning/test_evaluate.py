import json
import math
from contextlib import contextmanager, nullcontext

import pytest
import torch
import torch.nn.functional as F

from pruning.apply import pruned
from pruning.evaluate import (
    EvaluationError,
    Quality,
    evaluate_quality,
    quality_curves,
    token_kl,
)
from tests.tiny_models import MODEL_TYPES, VOCAB, reference_logits, tiny_ids, tiny_model


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


def test_plan_curves_takes_prune_sets_per_k_for_criteria_whose_sets_are_not_nested():
    from pruning.evaluate import plan_curves
    variants, plan = plan_curves("layer", {"span": {0: [], 1: [2], 2: [0, 1]}, "knn": [2, 0]},
                                 [1, 2], lambda blocks: sorted(blocks))
    assert variants == {"layer:2": [2], "layer:0,1": [0, 1], "layer:0,2": [0, 2]}
    assert plan == [("span", 0, "unpruned"), ("span", 1, "layer:2"), ("span", 2, "layer:0,1"),
                    ("knn", 0, "unpruned"), ("knn", 1, "layer:2"), ("knn", 2, "layer:0,2")]
    with pytest.raises(EvaluationError, match="'span' has no prune set for K=3"):
        plan_curves("layer", {"span": {1: [2]}}, [3], lambda b: b)
