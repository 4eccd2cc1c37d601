import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, Gemma3TextConfig, Qwen2Config

from analysis.architectures import get_architecture
from pruning.apply import (
    BlockSelectionError,
    PruningError,
    PruningStateError,
    active_pruning,
    apply_pruning,
    layer_config_changes,
    pruned,
)
from pruning.modeling_template import IdentityAttention
from tests.tiny_models import LAYERS, MODEL_TYPES, tiny_ids, tiny_model

SMALL = dict(vocab_size=128, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
             head_dim=8, bos_token_id=1, eos_token_id=2, pad_token_id=0)
# Families plus two variants whose layers differ by type: Qwen2 with sliding layers from
# `max_window_layers` on, and Gemma 3 mixing full (global rope) and sliding (local rope).
VARIANTS = (*MODEL_TYPES, "qwen2-sliding", "gemma3-mixed")
GRANULARITIES = ("layer", "attn")


def make_model(name: str):
    if name == "qwen2-sliding":
        config = Qwen2Config(**SMALL, use_sliding_window=True, sliding_window=6,
                             max_window_layers=2)
    elif name == "gemma3-mixed":
        config = Gemma3TextConfig(**SMALL, sliding_window=6, query_pre_attn_scalar=8,
                                  layer_types=["full_attention", "sliding_attention",
                                               "sliding_attention", "full_attention"])
    else:
        return tiny_model(name)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def greedy_without_cache(model, ids, steps):
    for _ in range(steps):
        nxt = logits(model, ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def snapshot(model):
    layers = get_architecture(model).layers(model)
    return {
        "layers": list(layers),
        "attn": [get_architecture(model).attention(layer) for layer in layers],
        "layer_idx": [(m, m.layer_idx) for m in model.modules()
                      if isinstance(getattr(m, "layer_idx", None), int)],
        "config": model.config.to_dict(),
        "keys": list(model.state_dict()),
    }


def output_projection(attn):
    for name in ("o_proj", "out_proj", "c_proj"):
        if hasattr(attn, name):
            return getattr(attn, name)
    raise AssertionError(f"no output projection in {type(attn).__name__}")


@pytest.mark.parametrize("name", VARIANTS)
def test_layer_pruning_equals_skipping_the_layers(name):
    model = make_model(name)
    ids = tiny_ids()
    layers = get_architecture(model).layers(model)

    def skip(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])

    handles = [layers[i].register_forward_hook(skip, with_kwargs=True) for i in (0, 2)]
    expected = logits(model, ids)
    for h in handles:
        h.remove()

    with pruned(model, "layer", [0, 2]):
        assert len(get_architecture(model).layers(model)) == LAYERS - 2
        assert model.config.num_hidden_layers == LAYERS - 2
        got = logits(model, ids)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(expected, logits(model, ids), atol=1e-3)


@pytest.mark.parametrize("name", VARIANTS)
def test_attn_pruning_equals_zeroed_attention_output(name):
    model = make_model(name)
    ids = tiny_ids()
    reference = copy.deepcopy(model)
    arch = get_architecture(reference)
    with torch.no_grad():
        for i in (0, 2):
            proj = output_projection(arch.attention(arch.layers(reference)[i]))
            proj.weight.zero_()
            if proj.bias is not None:
                proj.bias.zero_()

    with pruned(model, "attn", [0, 2]):
        got = logits(model, ids)
    torch.testing.assert_close(got, logits(reference, ids), rtol=0, atol=1e-5)
    assert not torch.allclose(got, logits(model, ids), atol=1e-3)


@pytest.mark.parametrize("name", VARIANTS)
def test_attn_pruning_leaves_the_residual_unchanged(name):
    # The residual right after the attention sub-block (as the table locates it) must equal
    # the layer's input; for Gemma that needs post_attention_layernorm(0) == 0.
    model = make_model(name)
    arch = get_architecture(model)
    seen = {}

    def grab(key):
        def hook(module, args, kwargs):
            seen[key] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        return hook

    layer = arch.layers(model)[1]
    residual_module, side = arch.attn_residual_module(layer)
    assert side == "input"
    handles = [layer.register_forward_pre_hook(grab("x"), with_kwargs=True),
               residual_module.register_forward_pre_hook(grab("y"), with_kwargs=True)]
    with pruned(model, "attn", [1]):
        logits(model, tiny_ids())
    for h in handles:
        h.remove()
    width = seen["x"].shape[-1]
    assert torch.equal(seen["y"].reshape(-1, width), seen["x"].reshape(-1, width))


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", VARIANTS)
def test_restore_is_exact(name, granularity):
    model = make_model(name)
    ids = tiny_ids()
    before_logits = logits(model, ids)
    before = snapshot(model)

    restore = apply_pruning(model, granularity, [0, 2])
    assert active_pruning(model) == (granularity, (0, 2))
    assert snapshot(model)["keys"] != before["keys"]
    restore()
    restore()  # a second call changes nothing

    after = snapshot(model)
    assert all(a is b for a, b in zip(after["layers"], before["layers"], strict=True))
    assert all(a is b for a, b in zip(after["attn"], before["attn"], strict=True))
    assert [(id(m), i) for m, i in after["layer_idx"]] == [
        (id(m), i) for m, i in before["layer_idx"]]
    assert after["config"] == before["config"]
    assert after["keys"] == before["keys"]
    assert active_pruning(model) is None
    assert torch.equal(logits(model, ids), before_logits)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_restore_happens_on_error(granularity):
    model = make_model("gemma2")
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with pruned(model, granularity, [1, 3]):
            raise RuntimeError("boom")
    after = snapshot(model)
    assert all(a is b for a, b in zip(after["layers"], before["layers"], strict=True))
    assert after["config"] == before["config"]
    assert active_pruning(model) is None


def test_layer_pruning_renumbers_config_and_layer_idx():
    model = make_model("qwen2-sliding")
    assert model.config.layer_types == ["full_attention", "full_attention",
                                        "sliding_attention", "sliding_attention"]
    layers = get_architecture(model).layers(model)
    kept = [layers[1], layers[3]]
    with pruned(model, "layer", [0, 2]):
        assert model.config.num_hidden_layers == 2
        assert model.config.layer_types == ["full_attention", "sliding_attention"]
        assert model.config.max_window_layers == 1
        assert [layer.self_attn.layer_idx for layer in kept] == [0, 1]
        assert list(get_architecture(model).layers(model)) == kept
    assert model.config.max_window_layers == 2
    assert [layer.self_attn.layer_idx for layer in kept] == [1, 3]


def test_layer_config_changes_threshold_and_lists():
    config = Qwen2Config(**{**SMALL, "num_hidden_layers": 6}, use_sliding_window=True,
                         sliding_window=8, max_window_layers=3)
    changes = layer_config_changes(config, kept=[0, 2, 4, 5], num_layers=6)
    assert changes["num_hidden_layers"] == 4
    assert changes["max_window_layers"] == 2  # layers 0 and 2 were below 3
    assert changes["layer_types"] == ["full_attention", "full_attention",
                                      "sliding_attention", "sliding_attention"]
    # A threshold at or past the depth marks no layer as sliding and stays as it is.
    config = Qwen2Config(**SMALL, max_window_layers=28)
    assert "max_window_layers" not in layer_config_changes(config, kept=[1, 2], num_layers=4)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", VARIANTS)
def test_generate_with_cache_equals_greedy_without_cache(name, granularity):
    # Block 0 is pruned: its cache slot is where positions and mask sizes are read. The
    # sequences outgrow the sliding windows of the Gemma and Qwen2 variants.
    model = make_model(name)
    model.generation_config.eos_token_id = None
    prompt = tiny_ids(batch=2, seqlen=10, seed=1)
    with pruned(model, granularity, [0, 3]):
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                   max_new_tokens=8, do_sample=False, use_cache=True)
        expected = greedy_without_cache(model, prompt, 8)
    assert torch.equal(generated, expected)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", VARIANTS)
def test_chunked_forward_with_cache_equals_full_forward(name, granularity):
    # Without position ids, the model reads the past length from the cache (layer 0's slot).
    model = make_model(name)
    ids = tiny_ids(batch=1, seqlen=30, seed=2)
    with pruned(model, granularity, [0, 3]):
        expected = logits(model, ids)
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            chunks = [model(input_ids=ids[:, s:s + 7], past_key_values=cache, use_cache=True).logits
                      for s in range(0, ids.shape[1], 7)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), expected, rtol=0, atol=1e-5)


def test_stand_in_returns_zeros_and_grows_its_cache_slot():
    stand_in = IdentityAttention(layer_idx=1)
    cache = DynamicCache()
    x = torch.randn(2, 5, 32)
    out, weights = stand_in(x, past_key_values=cache)
    assert torch.equal(out, torch.zeros_like(x)) and weights is None
    assert cache.get_seq_length(1) == 5
    stand_in(hidden_states=x[:, :2], past_key_values=cache)
    assert cache.get_seq_length(1) == 7
    assert sum(p.numel() for p in stand_in.parameters()) == 0


@pytest.mark.parametrize("blocks, match", [
    ([4], "out of range"),
    ([-1], "out of range"),
    ([1, 1], "more than once"),
    ([0, 1, 2, 3], "all 4 blocks"),
    ([1.5], "whole layer indices"),
    (["1"], "whole layer indices"),
    ([True], "whole layer indices"),
    ("1", "whole layer indices"),
])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_bad_blocks_are_refused_without_changing_the_model(granularity, blocks, match):
    model = make_model("llama")
    before = snapshot(model)
    with pytest.raises(BlockSelectionError, match=match) as info:
        apply_pruning(model, granularity, blocks)
    assert isinstance(info.value, ValueError)
    after = snapshot(model)
    assert all(a is b for a, b in zip(after["attn"], before["attn"], strict=True))
    assert after["config"] == before["config"] and active_pruning(model) is None


def test_bad_granularity_and_double_pruning_are_refused():
    model = make_model("llama")
    with pytest.raises(PruningError, match="granularity"):
        apply_pruning(model, "head", [1])
    with pruned(model, "attn", [1]):
        with pytest.raises(PruningStateError, match="restore it"):
            apply_pruning(model, "layer", [2])
    with pruned(model, "layer", []):  # nothing to prune is allowed
        assert model.config.num_hidden_layers == LAYERS
