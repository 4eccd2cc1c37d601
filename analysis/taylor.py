"""Taylor importance of MLP neurons, with the model's own output entropy as the loss.

For each decoder layer, the intermediate neurons are the input columns of the down
projection. With a the down projection's input and g = dLoss/da, neuron j scores

    importance_j = sum over samples and tokens of |a_j * g_j|

which is the first-order estimate of how much the loss moves when neuron j is zeroed.
`taylor-entropy` uses the mean entropy of softmax(logits) as the loss (no labels);
`taylor-ce` uses next-token cross-entropy (classic Taylor pruning); `magnitude` is a
weight-norm baseline that needs no data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from analysis.architectures import MLPLayout, get_architecture, get_submodule
from analysis.errors import EntroDropError

TaylorCriterion = Literal["taylor-entropy", "taylor-ce", "magnitude"]
TAYLOR_CRITERIA: tuple[TaylorCriterion, ...] = ("taylor-entropy", "taylor-ce", "magnitude")


class TaylorError(EntroDropError):
    """Bad input to the neuron scoring; the message names the argument and the fix."""


@dataclass
class NeuronScores:
    """One importance per intermediate neuron, per decoder layer (layer 0 first)."""

    criterion: str
    scores: list[torch.Tensor]
    """Per layer, a float32 CPU tensor of shape [I] (I = that layer's intermediate size)."""

    def layer_totals(self) -> list[float]:
        """Sum of the neuron scores of each layer: a block-level criterion to set beside dH."""
        return [float(s.double().sum()) for s in self.scores]

    def to_dict(self) -> dict:
        return {"criterion": self.criterion, "scores": [s.tolist() for s in self.scores]}

    @classmethod
    def from_dict(cls, data: dict) -> NeuronScores:
        try:
            criterion = str(data["criterion"])
            scores = [torch.tensor(s, dtype=torch.float32) for s in data["scores"]]
        except (KeyError, TypeError, ValueError) as e:
            raise TaylorError(f"not a NeuronScores dict ({e}); expected keys criterion, scores") from e
        if any(s.ndim != 1 for s in scores):
            raise TaylorError("NeuronScores dict: every layer's scores must be a flat list")
        return cls(criterion, scores)


def mlp_modules(model: nn.Module) -> list[tuple[list[nn.Module], nn.Module]]:
    """Per decoder layer: (the modules feeding the intermediate neurons, the down projection)."""
    arch = get_architecture(model)
    return [layer_mlp(layer, arch.mlp) for layer in arch.layers(model)]


def layer_mlp(layer: nn.Module, layout: MLPLayout) -> tuple[list[nn.Module], nn.Module]:
    """One decoder layer's (modules feeding the intermediate neurons, down projection)."""
    return [get_submodule(layer, p) for p in layout.inputs], get_submodule(layer, layout.output)


def intermediate_size(down: nn.Module, layout: MLPLayout) -> int:
    """I, read from the down projection's weight (Conv1D stores [in, out], Linear [out, in])."""
    return int(down.weight.shape[0] if layout.conv1d else down.weight.shape[1])


def neuron_scores(
    model: nn.Module,
    input_ids: torch.Tensor | None,
    criterion: TaylorCriterion,
    *,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> NeuronScores:
    """Score every MLP neuron of every layer.

    input_ids: LongTensor [N, T], one calibration sample per row (ignored for `magnitude`).
    Each sample's loss is the mean over its tokens, and the scores are summed over samples,
    so they do not depend on `batch_size`. `progress(done, N)` is called after each batch.
    """
    check_criterion(criterion)
    if criterion == "magnitude":
        return magnitude_scores(model)
    check_scoring_input(input_ids, criterion, batch_size)

    layout = get_architecture(model).mlp
    downs = [down for _, down in mlp_modules(model)]
    device = model.get_input_embeddings().weight.device
    n = input_ids.shape[0]
    acc = TaylorSums([intermediate_size(d, layout) for d in downs])
    with _frozen_eval(model), _capture(downs, acc):
        for start in range(0, n, batch_size):
            ids = input_ids[start:start + batch_size].to(device)
            logits = model(input_ids=ids, use_cache=False).logits
            loss = sample_summed_loss(logits, ids, criterion)
            # The gradient targets are the leaves made in the hooks; the values returned are
            # not needed, the tensor hooks have already added |a*g| to the sums.
            torch.autograd.grad(loss, acc.leaves)
            acc.end_batch()
            del logits, loss
            if progress is not None:
                progress(min(start + batch_size, n), n)
    return NeuronScores(criterion, [s.float().cpu() for s in acc.sums])


def magnitude_scores(model: nn.Module) -> NeuronScores:
    """Weight-norm baseline, no data.

    importance_j = ||W_down[:, j]||_2 * ||W_in[j, :]||_2, where W_in stacks the rows of every
    module feeding neuron j (gate and up for gated MLPs, the fused gate_up halves for
    Phi-3, fc1/c_fc otherwise). Biases are left out. Conv1D weights are transposed first.
    """
    layout = get_architecture(model).mlp
    scores = [layer_magnitudes(inputs, down, layout).cpu() for inputs, down in mlp_modules(model)]
    return NeuronScores("magnitude", scores)


@torch.no_grad()
def layer_magnitudes(inputs: list[nn.Module], down: nn.Module, layout: MLPLayout) -> torch.Tensor:
    """One layer's `magnitude_scores` [I], float32, on the device of its weights."""
    size = intermediate_size(down, layout)
    w_out = _as_out_in(down, layout).float()  # [D, I]
    in_sq = torch.zeros(size, dtype=torch.float32, device=w_out.device)
    for module in inputs:
        w_in = _as_out_in(module, layout).float()  # [I or 2I, D]
        rows = w_in.pow(2).sum(dim=1)
        in_sq += rows.view(-1, size).sum(dim=0) if layout.fused_gate_up else rows
    return w_out.norm(dim=0) * in_sq.sqrt()


def _as_out_in(module: nn.Module, layout: MLPLayout) -> torch.Tensor:
    return module.weight.t() if layout.conv1d else module.weight


def check_criterion(criterion: object) -> None:
    """Refuse a criterion that is not one of `TAYLOR_CRITERIA`."""
    if criterion not in TAYLOR_CRITERIA:
        raise TaylorError(f"criterion must be one of {', '.join(TAYLOR_CRITERIA)}; got {criterion!r}")


def check_scoring_input(input_ids: object, criterion: str, batch_size: object) -> None:
    """Refuse calibration windows or a batch size that data-driven scoring cannot use."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise TaylorError(f"input_ids must be a LongTensor of shape [N, T]; got {shape}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TaylorError(f"input_ids must hold integer token ids; got dtype {input_ids.dtype}")
    min_t = 2 if criterion == "taylor-ce" else 1
    if input_ids.shape[0] < 1 or input_ids.shape[1] < min_t:
        raise TaylorError(
            f"input_ids has shape {tuple(input_ids.shape)}; {criterion} needs N >= 1 samples "
            f"of T >= {min_t} tokens"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TaylorError(f"batch_size must be a positive integer; got {batch_size!r}")


def sample_summed_loss(logits: torch.Tensor, ids: torch.Tensor, criterion: str) -> torch.Tensor:
    """Sum over the batch's samples of each sample's mean per-token loss.

    logits [B, T, V]. taylor-entropy: per token H = -sum_v p_v log p_v over all T positions.
    taylor-ce: per token -log p(ids[t+1]) over the first T-1 positions. At least float32.
    """
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    if criterion == "taylor-entropy":
        per_token = -(logp.exp() * logp).sum(dim=-1)
    else:
        per_token = -logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    return per_token.mean(dim=1).sum()


class TaylorSums:
    """Per-layer [I] sums of |a*g|; only the current batch's tensors are ever held."""

    def __init__(self, sizes: list[int]):
        self.sizes = sizes
        self.sums: list[torch.Tensor | None] = [None] * len(sizes)
        self.leaves: list[torch.Tensor] = []

    def pre_hook(self, layer_idx: int):
        def hook(module: nn.Module, args: tuple):
            a = args[0]
            if not a.requires_grad:
                # Parameters are frozen, so the first down projection's input is a constant:
                # make it the leaf that gradients flow to; no backward runs below it.
                a = a.detach().requires_grad_()
                self.leaves.append(a)
                args = (a, *args[1:])
            # Hold a detached view: a hook on `a` that refers to `a` would be a reference cycle.
            value = a.detach()
            a.register_hook(lambda g: self.add(layer_idx, value, g))
            return args

        return hook

    def add(self, layer_idx: int, a: torch.Tensor, g: torch.Tensor) -> None:
        """Add |a*g| summed over samples and tokens to layer `layer_idx`'s sums."""
        dtype = torch.promote_types(a.dtype, torch.float32)
        contrib = (a.to(dtype) * g.to(dtype)).abs().reshape(-1, a.shape[-1]).sum(dim=0)
        if self.sums[layer_idx] is None:
            self.sums[layer_idx] = contrib
        else:
            self.sums[layer_idx] += contrib

    def end_batch(self) -> None:
        self.leaves = []
        missing = [i for i, s in enumerate(self.sums) if s is None]
        if missing:
            raise RuntimeError(f"no gradient reached the MLP of layers {missing}")


@contextmanager
def _capture(downs: list[nn.Module], acc: TaylorSums) -> Iterator[None]:
    handles = []
    try:
        for layer_idx, down in enumerate(downs):
            handles.append(down.register_forward_pre_hook(acc.pre_hook(layer_idx)))
        yield
    finally:
        for h in handles:
            h.remove()
        acc.leaves = []


@contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the pass; every flag is restored after."""
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    train_flags = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in grad_flags:
            p.requires_grad_(False)
        model.eval()
        with torch.enable_grad():
            yield
    finally:
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        for m, flag in train_flags:
            m.training = flag
