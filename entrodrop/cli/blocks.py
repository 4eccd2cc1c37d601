"""Block pruning commands: `prune-list` (the decision), `evaluate` (what it costs and
saves, and quality curves over K or width ratios) and `export` (the pruned checkpoint)."""

from __future__ import annotations

import argparse
import json
import sys

from analysis.profile import Profile
from analysis.settings import GRANULARITIES
from analysis.taylor import TAYLOR_CRITERIA
from entrodrop import service
from entrodrop.cli.common import (
    DEFAULT_CRITERION,
    DEFAULT_KEEP_MODE,
    KEEP_MODES,
    CLIError,
    ProgressBar,
    add_calibration_args,
    add_decision_args,
    add_estimator_args,
    add_format_args,
    add_model_args,
    analysis_request,
    calibration_settings,
    check_json_out,
    estimator_settings,
    format_note,
    load,
    model_settings,
    report_messages,
    write_json,
)
from pruning.decision import Decision
from pruning.gguf_export import GGUF_TYPES
from pruning.ranking import BASELINE
from pruning.stages import StagePlan

ENGINES = ("transformers", "llama.cpp", "both")
RANK_STRING_KEY = "rank_string (position i = rank of layer i)"
DEFAULT_HELD_OUT = 16
"""Held-out windows `evaluate` measures quality on."""
DEFAULT_REPEATS = 3
"""Timing repeats behind `evaluate`'s speed ratios."""


def profile_of(a: argparse.Namespace) -> Profile:
    """The profile of --model on --calibration (from the cache when it has it)."""
    progress = ProgressBar(a.quiet)
    result = service.analyze(analysis_request(a, [a.calibration]), progress=progress)
    progress.done()
    report_messages(result, a.quiet)
    return result.runs[0]


def plan_of(a: argparse.Namespace, profile: Profile) -> StagePlan:
    policy = a.policy or ("manual" if a.s_start is not None else "auto")
    return service.stage_plan(profile, policy=policy, s_start=a.s_start,
                              allow_last=a.allow_last, stage_estimator=a.stage_estimator)


def decision_of(a: argparse.Namespace, profile: Profile, plan: StagePlan) -> Decision:
    return service.decision(profile, a.granularity, a.criterion, a.k, plan)


def cmd_prune_list(a: argparse.Namespace) -> int:
    profile = profile_of(a)
    d = decision_of(a, profile, plan_of(a, profile))
    out = {**d.to_json(), RANK_STRING_KEY: d.rank_string(), "prunable": list(d.plan.prunable)}
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


def parse_ks(text: str) -> list[int]:
    try:
        if ".." in text:
            lo, hi = text.split("..")
            return list(range(int(lo), int(hi) + 1))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--ks must look like 0..8 or 0,2,4; got {text!r}") from None


def parse_ratios(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise CLIError(f"--width-ratios must look like 1,0.9,0.8; got {text!r}") from None


def _num(value: float | None, spec: str) -> str:
    """A figure for the printed summary; '-' for one that is not finite (null in JSON)."""
    return "-" if value is None else format(value, spec)


def _unpruned_figures(a: argparse.Namespace, loaded: service.Model, ids) -> dict:
    figures = service.model_figures(loaded, ids, batch_size=a.batch_size)
    report: dict = {"model": a.model, "held_out_windows": int(ids.shape[0]),
                    "seqlen": int(ids.shape[1]), "parameters": figures["parameters"],
                    "weight_bytes": figures["weight_bytes"], "perplexity": figures["perplexity"]}
    print(f"{a.model}: perplexity {figures['perplexity']:.3f} on {ids.shape[0]}x{ids.shape[1]} "
          f"held-out tokens, {report['parameters'] / 1e6:.1f} M parameters")
    return report


def _pruned_figures(a: argparse.Namespace, loaded: service.Model, ids, d: Decision) -> dict:
    blocks = list(d.blocks)
    q = service.quality_of(loaded, ids, a.granularity, blocks, batch_size=a.batch_size)
    line = (f"{a.granularity}/{a.criterion} K={a.k} blocks {blocks}: perplexity "
            f"{q['perplexity']:.3f}, KL {q['kl']:.4f}, top-1 {q['top1']:.3f}")
    if isinstance(loaded, service.StreamedModel):
        # Timing decode steps would re-read every layer per token: speed needs the model.
        saved = service.parameter_savings(loaded, a.granularity, blocks)
        print(f"{line}; params {saved['params_pruned'] / 1e6:.1f} M of "
              f"{saved['params_base'] / 1e6:.1f} M (speed needs the whole model in memory: "
              "not measured under layer streaming)")
        return {"blocks": blocks, **q, "parameters": saved, "speed": None}
    out = {"blocks": blocks, **q}
    if a.engine in ("transformers", "both"):
        speed = service.speed(loaded, a.granularity, blocks, repeats=a.repeats)
        print(f"{line}; prefill x{_num(speed['prefill_ratio'], '.2f')}, "
              f"decode x{_num(speed['decode_ratio'], '.2f')}, "
              f"params {speed['params_pruned'] / 1e6:.1f} M of {speed['params_base'] / 1e6:.1f} M")
        out["speed"] = speed
    if a.engine in ("llama.cpp", "both"):
        engine = service.engine_speed(loaded, a.granularity, blocks, repeats=a.repeats,
                                      gguf_type=a.gguf_type)
        print(f"{line}; llama.cpp ({a.gguf_type}) prefill x{_num(engine['prefill_ratio'], '.2f')}, "
              f"decode x{_num(engine['decode_ratio'], '.2f')}")
        out["speed_llama_cpp"] = engine
    return out


def _k_curves(a: argparse.Namespace, loaded: service.Model, ids, profile: Profile,
              plan: StagePlan, ks: list[int]) -> list[dict]:
    criteria = a.criteria.split(",")
    rows = []
    for g in a.curve_granularities.split(","):
        orders = {c: service.decision(profile, g, c, 0, plan).order for c in criteria}
        for row in service.quality_over_k(loaded, ids, orders, g, ks, batch_size=a.batch_size):
            rows.append({"granularity": g, **row})
    print(f"{'gran':5} {'criterion':9} {'K':>3} {'perplexity':>11} {'KL':>8} {'top-1':>6}")
    for r in rows:
        print(f"{r['granularity']:5} {r['criterion']:9} {r['k']:>3} {r['perplexity']:>11.3f} "
              f"{r['kl']:>8.4f} {r['top1']:>6.3f}")
    return rows


def _width_curves(a: argparse.Namespace, loaded: service.Model, ids,
                  ratios: list[float]) -> list[dict]:
    scores = service.width_scores(loaded, calibration_settings(a, a.calibration),
                                  a.width_criteria.split(","), batch_size=a.batch_size)
    rows = service.width_curves(loaded, ids, scores, ratios, mode=a.width_mode,
                                batch_size=a.batch_size)
    print(f"{'criterion':15} {'ratio':>6} {'perplexity':>11} {'KL':>8} {'top-1':>6}  ({a.width_mode})")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:g}"
        print(f"{r['criterion']:15} {ratio:>6} {r['perplexity']:>11.3f} {r['kl']:>8.4f} {r['top1']:>6.3f}")
    return rows


def cmd_evaluate(a: argparse.Namespace) -> int:
    ks = parse_ks(a.ks) if a.ks else None  # malformed lists fail before any work
    ratios = parse_ratios(a.width_ratios) if a.width_ratios else None
    check_json_out(a.out)
    # Every setting against the model's config, before it loads.
    service.check_settings(model_settings(a), [calibration_settings(a, a.calibration)],
                           estimators=estimator_settings(a) if ks or a.k is not None else None,
                           batch_size=a.batch_size, width_ratios=ratios or (),
                           width_mode=a.width_mode, width_export=False, held_out=a.held_out)
    loaded = load(a)
    ids = service.held_out_windows(calibration_settings(a, a.calibration), loaded, a.held_out)
    report = _unpruned_figures(a, loaded, ids)
    if ks is not None or a.k is not None:
        profile = profile_of(a)
        plan = plan_of(a, profile)
    if a.k is not None:
        report["pruned"] = _pruned_figures(a, loaded, ids, decision_of(a, profile, plan))
    if ks is not None:
        report["curves"] = _k_curves(a, loaded, ids, profile, plan, ks)
    if ratios is not None:
        report["width_curves"] = _width_curves(a, loaded, ids, ratios)
    if a.out:
        write_json(a.out, report)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    service.check_export_target(a.out, overwrite=a.overwrite)  # before minutes of analysis
    profile = profile_of(a)
    d = decision_of(a, profile, plan_of(a, profile))
    loaded = load(a)
    progress = ProgressBar(a.quiet)
    out = service.export_blocks(loaded, profile, d, a.out, overwrite=a.overwrite,
                                progress=progress, fmt=a.format, gguf_type=a.gguf_type)
    progress.done()
    print(f"exported {a.granularity} K={a.k} (blocks {list(d.blocks)}) to {out}"
          f"{format_note(a, out)}", file=sys.stderr)
    return 0


def _add_profile_args(p: argparse.ArgumentParser, with_k: bool = True) -> None:
    add_model_args(p)
    add_calibration_args(p, multiple=False)
    add_estimator_args(p)
    add_decision_args(p, with_k=with_k)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune-list", help="the ranked prune order and the first K blocks")
    _add_profile_args(p)
    p.set_defaults(func=cmd_prune_list)

    p = sub.add_parser("export", help="export the pruned model as a checkpoint")
    _add_profile_args(p)
    p.add_argument("--out", required=True, help="target folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty target")
    add_format_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="quality and speed of a model, or of a pruned variant")
    _add_profile_args(p, with_k=False)
    p.add_argument("--k", type=int, default=None, help="evaluate this pruned variant against the model")
    p.add_argument("--held-out", dest="held_out", type=int, default=DEFAULT_HELD_OUT,
                   help="held-out windows for quality")
    # The old spelling, kept so that existing scripts still run.
    p.add_argument("--heldout", dest="held_out", type=int, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("--ks", default=None, help="quality curves over these K, e.g. 0..8")
    p.add_argument("--criteria", default=f"{DEFAULT_CRITERION},{BASELINE}",
                   help="orders to compare in the curves")
    p.add_argument("--curve-granularities", default=",".join(GRANULARITIES))
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help="timing repeats for the speed ratios")
    p.add_argument("--engine", choices=ENGINES, default="transformers",
                   help="where --k's speed is measured: transformers, llama.cpp (GGUF files "
                        "of --gguf-type; needs llama-cpp-python) or both")
    p.add_argument("--gguf-type", dest="gguf_type", choices=GGUF_TYPES, default="f16",
                   help="weights of the GGUF files timed in llama.cpp")
    p.add_argument("--width-ratios", default=None, help="width-pruning curves at these ratios, e.g. 1,0.9,0.8")
    p.add_argument("--width-criteria", default=",".join(TAYLOR_CRITERIA))
    p.add_argument("--width-mode", choices=KEEP_MODES, default=DEFAULT_KEEP_MODE)
    p.add_argument("--out", default=None, help="also write the figures as JSON")
    p.set_defaults(func=cmd_evaluate)
