"""Captured block inputs/outputs equal a manual computation, for every family."""

import math

import pytest
import torch

from analysis import estimators
from analysis.architectures import get_architecture
from analysis.capture import Accumulator, block_hooks, capture, record_points, span_count
from analysis.settings import EstimatorSettings
from tests.tiny_models import MODEL_TYPES, tiny_ids, tiny_model


def _final_norm(model):
    base = model.base_model
    for name in ("norm", "ln_f", "final_layer_norm"):
        if hasattr(base, name):
            return getattr(base, name)
    return base.decoder.final_layer_norm


def _attn_outputs(model, ids):
    """Raw attention sub-block outputs, recorded from the attention modules themselves."""
    arch = get_architecture(model)
    outs, handles = {}, []
    for i, layer in enumerate(arch.layers(model)):
        handles.append(arch.attention(layer).register_forward_hook(
            lambda _m, _a, out, i=i: outs.__setitem__(i, out[0] if isinstance(out, tuple) else out)))
    try:
        with torch.inference_mode():
            model.base_model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return outs


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_points_match_manual_forward(model_type):
    model = tiny_model(model_type)
    ids = tiny_ids(2, 16)
    pts = record_points(model, ids)
    L = len(get_architecture(model).layers(model))
    with torch.inference_mode():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(pts["z"]) == L + 1 and len(pts["attn"]) == L
    # Z_0..Z_{L-1} are HF's hidden_states; HF's last entry has the final norm applied.
    for j in range(L):
        torch.testing.assert_close(pts["z"][j], hs[j])
    with torch.inference_mode():
        torch.testing.assert_close(_final_norm(model)(pts["z"][L]), hs[L])
    assert not torch.allclose(pts["z"][L], hs[L])

    raw = _attn_outputs(model, ids)
    for i, layer in enumerate(get_architecture(model).layers(model)):
        out = raw[i]
        if model_type in ("gemma2", "gemma3_text"):
            with torch.inference_mode():  # Gemma normalises before adding back
                out = layer.post_attention_layernorm(out)
        torch.testing.assert_close(pts["attn"][i], pts["z"][i] + out)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt2", "opt"])
def test_capture_statistics_equal_estimators_on_recorded_points(model_type):
    model = tiny_model(model_type)
    ids = tiny_ids(5, 20, seed=3)
    opts = EstimatorSettings(bins=8, knn_k=3, renyi_alpha=2.0, skip_first=1, batch_size=2)
    acc = capture(model, ids, opts)
    pts = record_points(model, ids)
    used = lambda h: h[:, 1:, :]  # noqa: E731
    assert float(acc.samples) == 5
    for j, z in enumerate(pts["z"]):
        expect = torch.stack([estimators.bucket_entropy(used(z), 8).sum(),
                              estimators.knn_entropy(used(z), 3).sum(),
                              estimators.renyi_entropy(used(z), 2.0).sum()])
        torch.testing.assert_close(acc.z_entropy[:, j].float(), expect, rtol=1e-4, atol=1e-3)
        norms = z.norm(dim=-1).amax(dim=0)
        torch.testing.assert_close(acc.sink_max_norm[j].float(), norms)
    for i, a in enumerate(pts["attn"]):
        cos = estimators.cosine_importance(used(pts["z"][i]), used(a)).sum()
        torch.testing.assert_close(acc.attn_cosine[i].float(), cos, rtol=1e-4, atol=1e-5)
        lcos = estimators.cosine_importance(used(pts["z"][i]), used(pts["z"][i + 1])).sum()
        torch.testing.assert_close(acc.layer_cosine[i].float(), lcos, rtol=1e-4, atol=1e-5)
        ang = estimators.angular_distance(used(pts["z"][i]), used(a)).sum()
        torch.testing.assert_close(acc.attn_angular[i].float(), ang, rtol=1e-4, atol=1e-5)
    num_layers = len(pts["attn"])
    assert acc.span_angular.shape == (span_count(num_layers), num_layers)
    for n in range(1, span_count(num_layers) + 1):
        for start in range(num_layers + 1 - n):
            d = estimators.angular_distance(used(pts["z"][start]), used(pts["z"][start + n])).sum()
            torch.testing.assert_close(acc.span_angular[n - 1, start].float(), d,
                                       rtol=1e-4, atol=1e-5)


def test_batch_size_does_not_change_results():
    model = tiny_model("qwen3")
    ids = tiny_ids(6, 20, seed=1)
    a = capture(model, ids, EstimatorSettings(knn_k=3, batch_size=1))
    b = capture(model, ids, EstimatorSettings(knn_k=3, batch_size=4))
    for name in ("z_entropy", "attn_entropy", "layer_cosine", "attn_cosine", "attn_angular",
                 "span_angular", "sink_max_norm"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6)


def test_accumulator_size_does_not_grow_with_samples():
    model = tiny_model("llama")
    small = capture(model, tiny_ids(2, 20), EstimatorSettings(knn_k=3))
    big = capture(model, tiny_ids(12, 20), EstimatorSettings(knn_k=3))
    for name, value in vars(small).items():
        assert value.shape == getattr(big, name).shape, name


def test_merge_of_shards_equals_whole():
    model = tiny_model("mistral")
    ids = tiny_ids(6, 20, seed=2)
    opts = EstimatorSettings(knn_k=3, batch_size=2)
    whole = capture(model, ids, opts)
    merged = capture(model, ids[:4], opts).merge(capture(model, ids[4:], opts))
    for name in vars(whole):
        torch.testing.assert_close(getattr(whole, name), getattr(merged, name), rtol=1e-6, atol=1e-6)


def test_hooks_removed_even_after_an_error():
    model = tiny_model("llama")
    layers = get_architecture(model).layers(model)

    class Boom(Exception):
        pass

    class Failing:
        cleared = False

        def layer_input(self, i, h):
            raise Boom

        def clear(self):
            Failing.cleared = True

    with pytest.raises(Boom):
        with block_hooks(model, Failing()):
            model.base_model(input_ids=tiny_ids(1, 8), use_cache=False)
    assert Failing.cleared
    for layer in layers:
        assert not layer._forward_pre_hooks and not layer._forward_hooks
        assert not layer.post_attention_layernorm._forward_pre_hooks


def test_nonfinite_states_are_counted():
    model = tiny_model("llama")
    layer = get_architecture(model).layers(model)[1]
    h = layer.register_forward_hook(lambda _m, _a, out: out * float("inf"))
    try:
        acc = capture(model, tiny_ids(2, 16), EstimatorSettings(knn_k=3))
    finally:
        h.remove()
    assert acc.z_nonfinite[0] == 0 and acc.z_nonfinite[1] == 0
    assert acc.z_nonfinite[2] > 0


def test_zero_accumulator_shapes():
    acc = Accumulator.zeros(4, 10)
    assert acc.z_entropy.shape == (3, 5) and acc.attn_entropy.shape == (3, 4)
    assert acc.sink_max_norm.shape == (5, 10)


def test_chunked_stacking_gives_the_same_statistics(monkeypatch):
    from analysis import capture as capture_mod

    model = tiny_model("gemma2")
    ids = tiny_ids(4, 20, seed=5)
    opts = EstimatorSettings(knn_k=3, batch_size=2)
    whole = capture(model, ids, opts)
    monkeypatch.setattr(capture_mod.BlockStats, "chunk_bytes", 1)  # one point per call
    chunked = capture(model, ids, opts)
    for name in vars(whole):
        torch.testing.assert_close(getattr(whole, name), getattr(chunked, name), rtol=1e-6, atol=1e-6)


def test_per_point_results_are_the_same_stacked_or_one_by_one():
    from analysis.capture import BlockStats

    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(2, 6, 5, generator=g) for _ in range(4)]
    ys = [torch.randn(2, 6, 5, generator=g) for _ in range(4)]

    def dots(a, b):
        return torch.linalg.vecdot(a, b, dim=-1)

    stacked = BlockStats._per_point(dots, xs, ys, stack=True)
    single = BlockStats._per_point(dots, xs, ys, stack=False)
    assert len(stacked) == len(single) == 4
    for s, o, a, b in zip(stacked, single, xs, ys, strict=True):
        assert s.shape == (2, 6)
        torch.testing.assert_close(s, o)
        torch.testing.assert_close(o, dots(a, b))


def test_gpu_code_paths_give_the_cpu_results(monkeypatch):
    # The branches a GPU takes (stacked per-point work, torch.kthvalue, every knn row
    # recomputed, one big stack) forced on the CPU: the statistics must not change.
    import functools

    from analysis import capture as capture_mod

    model = tiny_model("llama")
    ids = tiny_ids(4, 24, seed=7)
    opts = EstimatorSettings(knn_k=3, batch_size=2)
    cpu = capture(model, ids, opts)
    per_point = capture_mod.BlockStats._per_point
    monkeypatch.setattr(capture_mod.BlockStats, "_per_point",
                        staticmethod(lambda fn, *lists: per_point(fn, *lists, stack=True)))
    monkeypatch.setattr(estimators, "_kth_smallest",
                        functools.partial(estimators._kth_smallest, use_numpy=False))
    monkeypatch.setattr(estimators, "_knn", functools.partial(estimators._knn, sparse_fix=False))
    monkeypatch.setattr(capture_mod.BlockStats, "cpu_chunk_bytes", capture_mod.BlockStats.chunk_bytes)
    gpu_like = capture(model, ids, opts)
    for name in vars(cpu):
        torch.testing.assert_close(getattr(gpu_like, name), getattr(cpu, name), rtol=1e-5, atol=1e-5)


def test_folding_a_batch_needs_no_data_dependent_host_round_trip():
    # The whole fold on meta tensors (shapes, no data): it takes the non-CPU branches and
    # would raise on any op that reads a value back to the host, which on a GPU would stall
    # the side stream the fold runs on.
    from analysis.capture import BlockStats

    layers, b, t, d = 3, 2, 12, 8
    acc = Accumulator.zeros(layers, t, device="meta")
    stats = BlockStats(acc, EstimatorSettings(knn_k=3))
    for i in range(layers):
        stats.layer_input(i, torch.empty(b, t, d, device="meta"))
        stats.attn_output(i, torch.empty(b, t, d, device="meta"))
        stats.layer_output(i, torch.empty(b, t, d, device="meta"))
    stats.flush()
    assert acc.z_entropy.shape == (3, layers + 1) and acc.sink_max_norm.shape == (layers + 1, t)


def test_cosine_scores_of_blocks_with_nonfinite_states_are_null_like_the_entropies():
    # One window's layer-1 output overflows (as fp16 can): its cosine sums are NaN, which
    # the accumulator folds as 0. The profile must not average that 0 in as if it were a
    # measurement: the blocks that read the bad states get null cosine scores, exactly the
    # blocks whose entropy and angular scores are null and that nonfinite_blocks lists.
    from analysis.profile import build_profile

    model = tiny_model("llama")
    layer = get_architecture(model).layers(model)[1]
    first_window_only = torch.tensor([float("inf"), 1.0]).view(2, 1, 1)
    h = layer.register_forward_hook(lambda _m, _a, out: out * first_window_only)
    try:
        acc = capture(model, tiny_ids(2, 16), EstimatorSettings(knn_k=3))
    finally:
        h.remove()
    profile = build_profile(acc, model_info={}, calibration_info={},
                            opts=EstimatorSettings(knn_k=3))
    for granularity in ("layer", "attn"):
        bad = profile.nonfinite_blocks[granularity]
        assert bad and 0 not in bad
        for score in ("cosine", "angular", "bucket"):
            values = profile.scores(granularity, score)
            assert [i for i, v in enumerate(values) if math.isnan(v)] == bad, (granularity, score)
        record = profile.to_json()["blocks"][granularity]["cosine"]
        assert [i for i, v in enumerate(record) if v is None] == bad
