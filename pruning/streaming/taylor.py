"""Taylor importance of MLP neurons, one decoder layer in memory at a time.

`analysis.taylor.neuron_scores` runs the whole model forward and backward per batch and
sums |a * g| at every down projection's input (a the activation, g = dLoss/da). Without the
whole model, the backward pass is rebuilt layer by layer (activation checkpointing at layer
boundaries):

1. Forward, layers 0..L-1: each layer's INPUT hidden states (all batches) are kept, the
   output becomes the next layer's input; no graph is kept.
2. The tail (final norm, head) on Z_L with gradients gives the loss of each batch (the same
   `sample_summed_loss`: mean token entropy in float32, or next-token cross-entropy) and
   G_L = dLoss/dZ_L.
3. Backward, layers L-1..0: the layer is read again, its forward recomputed from its stored
   input with gradients; one `autograd.grad` from G_{i+1} gives both g at the down
   projection's input (a, caught by a scoped forward pre-hook) and G_i for the layer below.

Memory: at most two layers' weights, the stored inputs (L x [N, T, D] in the compute
dtype) and one batch's graph through one layer. Each layer is read twice.
`magnitude` needs no data: each layer's MLP weights are read once.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from analysis.architectures import get_submodule
from analysis.capture import output_hidden
from analysis.streaming.sources import TensorSource
from analysis.taylor import (
    NeuronScores,
    TaylorSums,
    check_criterion,
    check_scoring_input,
    layer_magnitudes,
    layer_mlp,
    sample_summed_loss,
)
from pruning.streaming import walk
from pruning.streaming.variants import mlp_sizes

Progress = walk.Progress


def stream_neuron_scores(
    source: str | Path | TensorSource,
    input_ids: torch.Tensor | None,
    criterion: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> NeuronScores:
    """`analysis.taylor.neuron_scores` on a checkpoint, streamed.

    input_ids: [N, T] calibration windows (ignored for `magnitude`). Scores are summed over
    samples, each sample's loss being the mean over its tokens, so they do not depend on
    `batch_size`. Returns one float32 [I] tensor per layer. `progress(fraction, message)`.
    """
    check_criterion(criterion)
    sm = walk.open_streamed(source, device, dtype)
    if criterion == "magnitude":
        return _magnitude(sm, progress)
    check_scoring_input(input_ids, criterion, batch_size)

    num_layers = sm.num_layers
    batches = [b.to(sm.device) for b in walk.batches_of(input_ids, batch_size)]
    steps = 2 * num_layers + 1
    walk.report(progress, 0.0, "embedding the calibration windows")
    hidden, calls = walk.record_inputs(sm, batches)

    # 1. Forward: keep every layer's input, no graph.
    inputs: list[list[torch.Tensor] | None] = []
    with torch.no_grad():
        for i, layer in walk.walk_layers(sm, range(num_layers)):
            inputs.append(hidden)
            hidden = [output_hidden(layer(h, *calls[b][i][0], **calls[b][i][1]))
                      for b, h in enumerate(hidden)]
            walk.report(progress, (i + 1) / steps, f"forward: layer {i + 1}/{num_layers}")

    # 2. The loss of each batch and its gradient at Z_L.
    grads = []
    with walk.tail(sm) as logits_of, torch.enable_grad():
        for b, batch in enumerate(batches):
            z = hidden[b].detach().requires_grad_()
            loss = sample_summed_loss(logits_of(z), batch, criterion)
            (g,) = torch.autograd.grad(loss, z)
            grads.append(g)
            hidden[b] = None
            del loss, z
    walk.report(progress, (num_layers + 1) / steps, "loss and its gradient at the last layer")

    # 3. Backward, top layer first.
    acc = TaylorSums(mlp_sizes(sm.arch, sm.layers))
    for i, layer in walk.walk_layers(sm, range(num_layers - 1, -1, -1)):
        down = get_submodule(layer, sm.arch.mlp.output)
        for b in range(len(batches)):
            x = inputs[i][b]
            inputs[i][b] = None
            a, g, grads[b] = _layer_backward(layer, down, x, calls[b][i], grads[b], need_input=i > 0)
            acc.add(i, a, g)  # the same |a*g| sum, in the same batch order, as in memory
            del a, g, x
        inputs[i] = None
        calls_done = num_layers - i
        walk.report(progress, (num_layers + 1 + calls_done) / steps,
                    f"backward: layer {i + 1} ({calls_done}/{num_layers} done)")
    return NeuronScores(criterion, [s.float().cpu() for s in acc.sums])


def _layer_backward(layer: nn.Module, down: nn.Module, x: torch.Tensor, call: walk.LayerCall,
                    grad_out: torch.Tensor, *, need_input: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(a, dLoss/da, dLoss/dx) for one batch through one layer, recomputed from its input
    x [B, T, D] given dLoss/d(output) [B, T, D]; a [B, T, I] is the down projection's input."""
    caught: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple) -> None:
        caught.append(args[0])

    handle = down.register_forward_pre_hook(hook)
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            out = output_hidden(layer(x, *call[0], **call[1]))
            targets = [caught[0], x] if need_input else [caught[0]]
            grads = torch.autograd.grad(out, targets, grad_outputs=grad_out)
    finally:
        handle.remove()
    return caught[0].detach(), grads[0], grads[1] if need_input else None


def _magnitude(sm: walk.StreamedModel, progress: Progress | None) -> NeuronScores:
    """`analysis.taylor.magnitude_scores`, reading only each layer's MLP weights:
    importance_j = ||W_down[:, j]|| * ||W_in[j, :]|| (W_in stacking gate/up or fc1 rows)."""
    layout = sm.arch.mlp
    prefixes = tuple(f".{p}." for p in (*layout.inputs, layout.output))
    mlp_names = [{name: stored for name, stored in names.items()
                  if any(p in name for p in prefixes)} for names in sm.layer_names]
    scores = []
    for i, layer in walk.walk_layers(sm, range(sm.num_layers), names=mlp_names):
        scores.append(layer_magnitudes(*layer_mlp(layer, layout), layout).cpu())
        walk.report(progress, (i + 1) / sm.num_layers, f"magnitude: layer {i + 1}/{sm.num_layers}")
    return NeuronScores("magnitude", scores)
