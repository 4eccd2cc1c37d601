"""Quality of every pruning variant in one pass over the layers, one layer in memory.

The figures are those of `pruning.evaluate.evaluate_quality` (perplexity, KL(P_unpruned ||
P_variant), top-1 agreement with the unpruned argmax), computed from the same sums:

1. The body's non-layer weights give Z_0 and every layer's extra inputs per batch
   (`walk.record_inputs`); they are then dropped.
2. Layer by layer, each variant's hidden states [N, T, D] (one tensor per batch) go
   through the layer as the variant has it (`variants.acting`): removed layers are not
   run, attention-pruned layers run with `IdentityAttention`, width-pruned ones with their
   MLP sliced. Variants that made the same decisions so far hold the same state object,
   so the layer runs once for all of them (`_States`).
3. The tail (final norm, LM head) is loaded once; per batch the unpruned logits are the
   reference for every variant, as in memory.

Memory: at most two layers' weights, the recorded layer inputs, one [N, T, D] state per
distinct prefix of decisions, and at the end the tail plus two batches of logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from analysis.capture import output_hidden
from analysis.streaming.sources import TensorSource
from pruning.evaluate import (
    UNPRUNED,
    EvaluationError,
    Orders,
    Quality,
    QualitySums,
    checked_input_ids,
    curve_rows,
    next_token_log_probs,
    plan_curves,
    positive_int,
    token_kl,
)
from pruning.streaming import walk
from pruning.streaming.variants import RUN, LayerAction, acting, layer_actions, mlp_sizes

Progress = walk.Progress


class _States:
    """Hidden states [B, T, D] per batch, keyed by the history of decisions that made them.

    Key 0 is Z_0. After layer i, a variant that skipped it keeps its key; any other action
    maps (i, key, action) to one new key, so variants with the same history share one state.
    """

    def __init__(self, z0: list[torch.Tensor], names: Sequence[str]):
        self.states: dict[int, list[torch.Tensor | None]] = {0: z0}
        self.key_of: dict[str, int] = {name: 0 for name in names}
        self._next = 1

    def step(self, i: int, actions: Mapping[str, LayerAction]) -> dict[int, tuple[int, LayerAction]]:
        """Assign the keys after layer i; returns {new key: (input key, action)} to compute."""
        fresh: dict[tuple[int, LayerAction], int] = {}
        todo: dict[int, tuple[int, LayerAction]] = {}
        for name, prev in self.key_of.items():
            action = actions[name]
            if action.skip:
                continue
            key = fresh.get((prev, action))
            if key is None:
                key = fresh[(prev, action)] = self._next
                self._next += 1
                todo[key] = (prev, action)
            self.key_of[name] = key
        return todo

    def drop_unused(self) -> None:
        live = set(self.key_of.values())
        for key in [k for k in self.states if k not in live]:
            del self.states[key]


def stream_quality(
    source: str | Path | TensorSource,
    input_ids: torch.Tensor,
    variants: Mapping[str, object],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> dict[str, Quality]:
    """Perplexity, KL to the unpruned model and top-1 agreement of every variant, reading
    the checkpoint once, layer by layer.

    input_ids: [N, T] held-out windows. `variants`: {name: spec}, a spec being
    `(granularity, blocks)`, `("width", keep)` (one sorted index tensor per layer, as
    `pruning.width.keep_indices` gives) or a dict combining them (`pruning.streaming.
    variants`). Returns {"unpruned": ..., name: Quality, ...}, equal to
    `evaluate_quality(model, input_ids, {name: lambda: pruned(...)})` on the loaded model.
    `progress(fraction, message)` is called after each layer and each final batch.
    """
    sm = walk.open_streamed(source, device, dtype)
    ids = checked_input_ids(sm.model, input_ids)
    positive_int("batch_size", batch_size)
    if UNPRUNED in variants:
        raise EvaluationError(
            f"variant name {UNPRUNED!r} is reserved for the reference model; rename it")
    num_layers = sm.num_layers
    sizes = mlp_sizes(sm.arch, sm.layers)
    plans = {UNPRUNED: (RUN,) * num_layers}
    for name, spec in variants.items():
        plans[name] = layer_actions(spec, num_layers, sizes)

    batches = walk.batches_of(ids, batch_size)
    steps = num_layers + 1 + len(batches)
    walk.report(progress, 0.0, "embedding the held-out windows")
    z0, calls = walk.record_inputs(sm, batches)
    states = _States(z0, list(plans))
    with torch.inference_mode():
        for i, _layer in walk.walk_layers(sm, range(num_layers)):
            todo = states.step(i, {name: plan[i] for name, plan in plans.items()})
            for key, (prev, action) in todo.items():
                with acting(sm.arch, sm.layers, i, action) as acted:
                    states.states[key] = [
                        output_hidden(acted(h, *calls[b][i][0], **calls[b][i][1]))
                        for b, h in enumerate(states.states[prev])]
            states.drop_unused()
            for b in range(len(batches)):
                calls[b][i] = None  # this layer's masks and positions are not needed again
            walk.report(progress, (i + 1) / steps,
                        f"layer {i + 1}/{num_layers}: {len(todo)} distinct state(s) computed")

        sums = {name: QualitySums() for name in plans}
        with walk.tail(sm) as logits_of:
            for b, batch in enumerate(batches):
                _score_batch(batch.to(sm.device), b, states, logits_of, sums)
                walk.report(progress, (num_layers + 2 + b) / steps,
                            f"scored batch {b + 1} of {len(batches)}")
    return {name: s.result() for name, s in sums.items()}


def _score_batch(batch: torch.Tensor, b: int, states: _States, logits_of,
                 sums: dict[str, QualitySums]) -> None:
    """Add batch b's figures to every variant's sums, as `evaluate_quality` does: the
    unpruned log-probs are the reference; variants sharing a final state share its logits."""
    targets = batch[:, 1:].unsqueeze(-1)
    ref_key = states.key_of[UNPRUNED]
    ref = next_token_log_probs(logits_of(states.states[ref_key][b]))
    ref_top = ref.argmax(dim=-1)
    ref_nll = -ref.gather(-1, targets).squeeze(-1)
    sums[UNPRUNED].add(ref_nll, torch.zeros_like(ref_nll), torch.ones_like(ref_top))
    by_key: dict[int, list[str]] = {}
    for name, key in states.key_of.items():
        if name != UNPRUNED:
            by_key.setdefault(key, []).append(name)
    for key, names in by_key.items():
        out = ref if key == ref_key else next_token_log_probs(logits_of(states.states[key][b]))
        nll, kl, agree = (-out.gather(-1, targets).squeeze(-1), token_kl(ref, out),
                          out.argmax(dim=-1) == ref_top)
        for name in names:
            sums[name].add(nll, kl, agree)
        del out
    for key in states.states:
        states.states[key][b] = None  # this batch is done: free its states


def stream_quality_curves(
    source: str | Path | TensorSource,
    input_ids: torch.Tensor,
    granularity: str,
    orders: Mapping[str, Orders],
    ks: Sequence[int],
    **kw,
) -> list[dict]:
    """`pruning.evaluate.quality_curves` in streaming mode: rows {criterion, k, perplexity,
    kl, top1}, grouped by criterion in the order given, K ascending, a K = 0 row each.
    Every variant of every criterion goes through one `stream_quality` pass (extra keywords
    go to it); criteria that prune the same set at some K share it."""
    variants, plan = plan_curves(granularity, orders, ks,
                                 lambda blocks: (granularity, sorted(blocks)))
    return curve_rows(plan, stream_quality(source, input_ids, variants, **kw))

