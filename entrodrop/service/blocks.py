"""Block pruning: stage plans, decisions, what pruning costs and saves, and block exports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from analysis.architectures import count_parameters, weight_bytes
from analysis.models import LoadedModel
from analysis.profile import Profile
from analysis.settings import Estimator, Granularity
from entrodrop.service.models import MODEL_LOCK, Progress
from pruning.apply import pruned
from pruning.decision import Decision, decide
from pruning.evaluate import UNPRUNED, evaluate_quality, quality_curves
from pruning.export import check_export_target as export_target_check
from pruning.export import export_pruned
from pruning.manifest import block_manifest
from pruning.ranking import BASELINE, Criterion
from pruning.speed import generate_side_by_side, measure_speed
from pruning.stages import StagePlan, StagePolicy, plan_stages

DEFAULT_STAGE_ESTIMATOR: Estimator = "bucket"
"""Whose entropy curve sets the automatic S_start. The knn curve starts very low at Z_0
(repeated tokens have identical embeddings, so log r hits its floor), which puts j* at 0."""


def stage_plan(profile: Profile, *, policy: StagePolicy = "auto", s_start: int | None = None,
               allow_last: bool = False,
               stage_estimator: Estimator = DEFAULT_STAGE_ESTIMATOR) -> StagePlan:
    """The stage plan of one profile; `s_start` is used only under the 'manual' policy, and
    the automatic one comes from `stage_estimator`'s curve (null points are skipped)."""
    return plan_stages(profile.num_layers, policy=policy, curve=profile.curve(stage_estimator),
                       s_start=s_start if policy == "manual" else None, allow_last=allow_last)


def decision(profile: Profile, granularity: Granularity, criterion: Criterion, k: int,
             plan: StagePlan) -> Decision:
    """The full prune order of one criterion under `plan`, and its first k blocks."""
    return decide(profile, granularity, criterion, k, plan)


def quality_over_k(loaded: LoadedModel, held_out_ids, orders: Mapping[str, Sequence[int]],
                   granularity: Granularity, ks: Sequence[int], *, batch_size: int = 4,
                   progress: Progress | None = None) -> list[dict]:
    """Perplexity, KL and top-1 agreement after pruning the first K blocks of each order,
    side by side for every K (the unpruned model runs once per batch as the reference).
    A K larger than the shortest order is left out rather than failing the whole curve."""
    limit = min(len(o) for o in orders.values())
    ks = [k for k in ks if k <= limit]

    def step(done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1), f"evaluated batch {done} of {total}")

    with MODEL_LOCK:
        return quality_curves(loaded.model, held_out_ids, granularity,
                              {c: list(o) for c, o in orders.items()}, list(ks),
                              batch_size=batch_size, progress=step)


def model_figures(loaded: LoadedModel, held_out_ids, *, batch_size: int = 4) -> dict:
    """The unpruned model's perplexity on the held-out windows, its parameter count and
    weight bytes (tied weights counted once)."""
    with MODEL_LOCK:
        base = evaluate_quality(loaded.model, held_out_ids, {}, batch_size=batch_size)[UNPRUNED]
        return {"parameters": count_parameters(loaded.model),
                "weight_bytes": weight_bytes(loaded.model), "perplexity": base.perplexity,
                "tokens": base.tokens}


def quality_of(loaded: LoadedModel, held_out_ids, granularity: Granularity,
               blocks: Sequence[int], *, batch_size: int = 4) -> dict:
    """Perplexity, KL and top-1 agreement of the model with `blocks` pruned, against the
    unpruned model on the same windows (with the number of predicted tokens)."""
    model, blocks = loaded.model, list(blocks)
    with MODEL_LOCK:
        q = evaluate_quality(model, held_out_ids,
                             {"pruned": lambda: pruned(model, granularity, blocks)},
                             batch_size=batch_size)["pruned"]
    return q.to_dict()


def check_export_target(out_dir, *, overwrite: bool = False) -> Path:
    """Refuse an export target before any expensive work (exists, not ours, not writable)."""
    return export_target_check(out_dir, overwrite=overwrite)


def parameter_savings(loaded: LoadedModel, granularity: Granularity,
                      blocks: Sequence[int]) -> dict:
    """Parameters and weight bytes before and after pruning `blocks` (no forward pass)."""
    with MODEL_LOCK:
        base_p, base_b = count_parameters(loaded.model), weight_bytes(loaded.model)
        with pruned(loaded.model, granularity, list(blocks)):
            new_p, new_b = count_parameters(loaded.model), weight_bytes(loaded.model)
    return {"params_base": base_p, "params_pruned": new_p, "bytes_base": base_b,
            "bytes_pruned": new_b, "saved_fraction": 1 - new_p / base_p if base_p else 0.0}


def speed(loaded: LoadedModel, granularity: Granularity, blocks: Sequence[int], *,
          prompt_len: int = 128, new_tokens: int = 32, repeats: int = 3) -> dict:
    """Prefill and decode speed of the unpruned and the pruned model, side by side."""
    model = loaded.model
    with MODEL_LOCK:
        result = measure_speed(model, lambda: pruned(model, granularity, list(blocks)),
                               prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats)
    return result.to_dict()


def generate(loaded: LoadedModel, granularity: Granularity, blocks: Sequence[int], prompt: str,
             *, max_new_tokens: int, chat: bool = False) -> dict:
    """Greedy continuations of `prompt` by the unpruned and the pruned model."""
    model = loaded.model
    with MODEL_LOCK:
        return generate_side_by_side(model, loaded.tokenizer, prompt,
                                     lambda: pruned(model, granularity, list(blocks)),
                                     max_new_tokens=max_new_tokens, chat=chat)


def export_blocks(loaded: LoadedModel, profile: Profile, chosen: Decision, out_dir, *,
                  measured: Mapping | None = None, overwrite: bool = False,
                  progress: Progress | None = None) -> Path:
    """Write the model with `chosen.blocks` pruned, and its manifest (with the baseline
    criterion's choice at the same k, and any figures measured for this prune set)."""
    baseline = decide(profile, chosen.granularity, BASELINE, chosen.k, chosen.plan)
    manifest = block_manifest(profile, chosen, baseline, measured)
    with MODEL_LOCK:
        return export_pruned(loaded.model, loaded.tokenizer, out_dir,
                             granularity=chosen.granularity, blocks=list(chosen.blocks),
                             manifest=manifest, overwrite=overwrite, progress=progress)
