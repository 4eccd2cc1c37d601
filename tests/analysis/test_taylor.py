import gc
import json

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from analysis.architectures import get_architecture
from analysis.taylor import NeuronScores, TaylorError, magnitude_scores, neuron_scores
from tests.tiny_models import MODEL_TYPES, tiny_ids, tiny_model

INTER = 64  # intermediate size of the tiny models


def _reference_loss(logits: torch.Tensor, ids: torch.Tensor, criterion: str) -> torch.Tensor:
    """Sum over samples of the per-sample mean token loss, in float64, written independently."""
    logits = logits.double()
    if criterion == "taylor-entropy":
        p = logits.softmax(-1)
        per_token = -(p * p.log()).sum(-1)
    else:
        per_token = F.cross_entropy(
            logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none"
        )
    return per_token.mean(dim=1).sum()


def _loss_with_scaled_activation(model, ids, criterion, layer_idx, b, t, j, factor):
    """The loss when a_j of token (b, t) entering layer_idx's down projection is scaled."""
    down = get_architecture(model).layers(model)[layer_idx].mlp.down_proj

    def scale(module, args):
        a = args[0].clone()
        a[b, t, j] *= factor
        return (a,)

    handle = down.register_forward_pre_hook(scale)
    try:
        with torch.no_grad():
            return float(_reference_loss(model(ids).logits, ids, criterion))
    finally:
        handle.remove()


def _rms_norm_in_own_dtype(self, x):
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


@pytest.mark.parametrize("criterion", ["taylor-entropy", "taylor-ce"])
def test_scores_match_finite_differences(criterion, monkeypatch):
    # d L / d eps of L(a_j (1 + eps)) at eps = 0 is a_j * g_j for that token; the score is the
    # sum over tokens of its absolute value. Central differences on a float64 model; Llama's
    # RMSNorm computes in float32 whatever the dtype, whose rounding would swamp the
    # differences, so it runs in float64 here (same formula).
    monkeypatch.setattr(LlamaRMSNorm, "forward", _rms_norm_in_own_dtype)
    model = tiny_model("llama", dtype=torch.float64)
    ids = tiny_ids(batch=2, seqlen=6, seed=3)
    scores = neuron_scores(model, ids, criterion, batch_size=2)
    eps = 1e-3
    for layer_idx, j in [(0, 5), (2, 17), (3, 40)]:
        per_token = []
        for b in range(ids.shape[0]):
            for t in range(ids.shape[1]):
                up = _loss_with_scaled_activation(model, ids, criterion, layer_idx, b, t, j, 1 + eps)
                down = _loss_with_scaled_activation(model, ids, criterion, layer_idx, b, t, j, 1 - eps)
                per_token.append((up - down) / (2 * eps))
        per_token = torch.tensor(per_token, dtype=torch.float64)
        expected = per_token.abs().sum()
        got = scores.scores[layer_idx][j].double()
        assert torch.allclose(got, expected, rtol=1e-4, atol=0), (layer_idx, j, got, expected)
        # Mixed signs: |a*g| per token is not |sum of a*g|, so the check above tells them apart.
        assert per_token.sum().abs() < 0.95 * expected


def test_scores_do_not_depend_on_batch_size():
    model = tiny_model("llama", dtype=torch.float64)
    ids = tiny_ids(batch=5, seqlen=8, seed=1)
    ref = neuron_scores(model, ids, "taylor-entropy", batch_size=5)
    for bs in (1, 2, 3):
        other = neuron_scores(model, ids, "taylor-entropy", batch_size=bs)
        for a, b in zip(ref.scores, other.scores, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    # Scores add up over samples: scoring two halves separately gives the same total.
    first = neuron_scores(model, ids[:2], "taylor-entropy")
    second = neuron_scores(model, ids[2:], "taylor-entropy")
    for a, b, c in zip(ref.scores, first.scores, second.scores, strict=True):
        torch.testing.assert_close(a, b + c, rtol=1e-6, atol=0)


def _live_activation_tensors(batch: int, seqlen: int) -> int:
    shapes = {(batch, seqlen, INTER), (batch * seqlen, INTER)}
    return sum(
        1 for o in gc.get_objects()
        if issubclass(type(o), torch.Tensor) and tuple(o.shape) in shapes
    )


def test_no_activation_is_kept_across_batches():
    model = tiny_model("llama")
    n, seqlen, bs = 6, 10, 2
    seen = []

    def progress(done, total):
        gc.collect()
        seen.append((done, total, _live_activation_tensors(bs, seqlen)))

    scores = neuron_scores(model, tiny_ids(n, seqlen), "taylor-entropy", batch_size=bs,
                           progress=progress)
    assert seen == [(2, 6, 0), (4, 6, 0), (6, 6, 0)]
    assert [tuple(s.shape) for s in scores.scores] == [(INTER,)] * 4
    more = neuron_scores(model, tiny_ids(3 * n, seqlen), "taylor-entropy", batch_size=bs)
    assert [tuple(s.shape) for s in more.scores] == [(INTER,)] * 4


def _hook_count(model) -> int:
    return sum(
        len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def test_model_state_is_restored_and_no_parameter_gets_a_grad():
    model = tiny_model("gpt2")  # GPT-2 has dropout: scores in train mode must use eval mode
    params = list(model.parameters())
    for i, p in enumerate(params):
        p.requires_grad_(i % 2 == 0)
    flags = [p.requires_grad for p in params]
    hooks = _hook_count(model)
    ids = tiny_ids(3, 10)
    model.eval()
    ref = neuron_scores(model, ids, "taylor-ce")
    model.train()
    scores = neuron_scores(model, ids, "taylor-ce")
    for a, b in zip(ref.scores, scores.scores, strict=True):
        torch.testing.assert_close(a, b)
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert _hook_count(model) == hooks


def test_state_is_restored_after_an_exception():
    model = tiny_model("llama")
    model.model.layers[1].train()  # a mixed train/eval state must come back as it was
    modes = [m.training for m in model.modules()]
    hooks = _hook_count(model)

    def boom(done, total):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        neuron_scores(model, tiny_ids(4, 8), "taylor-entropy", batch_size=2, progress=boom)
    assert _hook_count(model) == hooks
    assert [m.training for m in model.modules()] == modes
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    # The model still works normally afterwards.
    assert model(tiny_ids(1, 8)).logits.requires_grad


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_family_gets_one_score_per_neuron(model_type):
    model = tiny_model(model_type)
    ids = tiny_ids(2, 12)
    for criterion in ("taylor-entropy", "taylor-ce", "magnitude"):
        scores = neuron_scores(model, ids, criterion, batch_size=1)
        assert scores.criterion == criterion
        assert len(scores.scores) == 4
        for s in scores.scores:
            assert s.shape == (INTER,) and s.dtype == torch.float32 and s.device.type == "cpu"
            assert torch.isfinite(s).all() and (s >= 0).all() and s.sum() > 0


def test_taylor_entropy_and_ce_rank_neurons_differently():
    model = tiny_model("llama")
    ids = tiny_ids(4, 16)
    ent = neuron_scores(model, ids, "taylor-entropy")
    ce = neuron_scores(model, ids, "taylor-ce")
    assert not torch.equal(ent.scores[0].argsort(), ce.scores[0].argsort())


def test_magnitude_definition_llama_gpt2_phi3():
    # importance_j = ||W_down[:, j]|| * ||all input rows of neuron j||.
    llama = tiny_model("llama")
    mlp = llama.model.layers[0].mlp
    with torch.no_grad():
        for lin in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            lin.weight.zero_()
        mlp.down_proj.weight[:2, 3] = torch.tensor([3.0, 4.0])  # norm 5
        mlp.gate_proj.weight[3, 0] = 1.0
        mlp.up_proj.weight[3, 1] = 2.0  # input norm sqrt(1 + 4)
        mlp.down_proj.weight[0, 7] = 2.0  # no input weight: score 0
        mlp.up_proj.weight[9, 5] = 1.0  # no output weight: score 0
    s = magnitude_scores(llama).scores[0]
    expected = torch.zeros(INTER)
    expected[3] = 5 * 5 ** 0.5
    torch.testing.assert_close(s, expected)

    gpt2 = tiny_model("gpt2")
    mlp = gpt2.transformer.h[1].mlp
    with torch.no_grad():
        mlp.c_fc.weight.zero_()  # Conv1D: [D, I]
        mlp.c_proj.weight.zero_()  # Conv1D: [I, D]
        mlp.c_fc.weight[:, 2] = 2.0  # input norm 2 * sqrt(32)
        mlp.c_proj.weight[2, :2] = torch.tensor([6.0, 8.0])  # output norm 10
        mlp.c_fc.bias.fill_(100.0)  # biases are not part of the definition
    expected = torch.zeros(INTER)
    expected[2] = 10 * 2 * 32 ** 0.5
    torch.testing.assert_close(magnitude_scores(gpt2).scores[1], expected)

    phi3 = tiny_model("phi3")
    mlp = phi3.model.layers[2].mlp
    with torch.no_grad():
        mlp.gate_up_proj.weight.zero_()  # [2I, D]: gate rows then up rows
        mlp.down_proj.weight.zero_()
        mlp.gate_up_proj.weight[4, 0] = 3.0  # gate of neuron 4
        mlp.gate_up_proj.weight[INTER + 4, 1] = 4.0  # up of neuron 4
        mlp.down_proj.weight[0, 4] = 2.0
        mlp.down_proj.weight[0, 8] = 1.0  # neuron 8 has no input weight
    expected = torch.zeros(INTER)
    expected[4] = 2.0 * 5.0
    torch.testing.assert_close(magnitude_scores(phi3).scores[2], expected)


def test_neuron_scores_serialise_and_sum_per_layer():
    scores = NeuronScores("taylor-entropy", [torch.tensor([1.0, 2.5]), torch.tensor([0.5, 0.25])])
    assert scores.layer_totals() == [3.5, 0.75]
    back = NeuronScores.from_dict(json.loads(json.dumps(scores.to_dict())))
    assert back.criterion == "taylor-entropy"
    assert all(torch.equal(a, b) for a, b in zip(scores.scores, back.scores, strict=True))
    with pytest.raises(TaylorError, match="criterion, scores"):
        NeuronScores.from_dict({"scores": [[1.0]]})
    with pytest.raises(TaylorError, match="flat list"):
        NeuronScores.from_dict({"criterion": "x", "scores": [[[1.0]]]})


def test_bad_input_is_rejected_with_a_clear_message():
    model = tiny_model("llama")
    with pytest.raises(TaylorError, match="criterion must be one of"):
        neuron_scores(model, tiny_ids(1, 8), "fisher")
    with pytest.raises(TaylorError, match=r"shape \[N, T\]"):
        neuron_scores(model, tiny_ids(1, 8)[0], "taylor-entropy")
    with pytest.raises(TaylorError, match="integer token ids"):
        neuron_scores(model, tiny_ids(1, 8).float(), "taylor-entropy")
    with pytest.raises(TaylorError, match="T >= 2"):
        neuron_scores(model, tiny_ids(2, 1), "taylor-ce")
    with pytest.raises(TaylorError, match="batch_size"):
        neuron_scores(model, tiny_ids(2, 8), "taylor-entropy", batch_size=0)
