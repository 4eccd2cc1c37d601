"""CLI commands that turn a profile into decisions and models: prune-list, evaluate, export, width."""

from __future__ import annotations

import argparse
import json
import sys

from analysis.settings import CRITERIA, GRANULARITIES


def _add_decision_args(p: argparse.ArgumentParser, with_k: bool = True) -> None:
    p.add_argument("--granularity", choices=GRANULARITIES, default="attn")
    p.add_argument("--criterion", choices=CRITERIA, default="knn")
    if with_k:
        p.add_argument("--k", type=int, default=4, help="number of blocks to prune")
    p.add_argument("--policy", choices=["auto", "reference", "manual"], default=None,
                   help="auto: S_start = argmin of the entropy curve over the first half; "
                        "reference: freeze blocks 0, 1 and L-1 (research code); "
                        "manual: --s-start (implied by --s-start)")
    p.add_argument("--s-start", type=int, default=None, help="first prunable layer (0-based)")
    p.add_argument("--allow-last", action="store_true", help="allow pruning the last block")
    p.add_argument("--stage-estimator", choices=["bucket", "knn", "renyi"], default="bucket",
                   help="whose entropy curve sets the automatic S_start")


def _profile(a):
    from entrodrop.cli import _Progress, _request, report_messages
    from entrodrop.service import analyze

    progress = _Progress(a.quiet)
    result = analyze(_request(a, [a.calibration]), progress=progress)
    progress.done()
    report_messages(result, a.quiet)
    return result.runs[0]


def _plan(a, profile):
    from entrodrop.service import stage_plan

    policy = a.policy or ("manual" if a.s_start is not None else "auto")
    return stage_plan(profile, policy=policy, s_start=a.s_start, allow_last=a.allow_last,
                      stage_estimator=a.stage_estimator)


def _load(a):
    from analysis.models import load_model
    from entrodrop.cli import _model_settings, _Progress

    progress = _Progress(a.quiet)
    loaded = load_model(_model_settings(a), progress=progress)
    progress.done()
    return loaded


def cmd_prune_list(a) -> int:
    from entrodrop.service import decide
    from pruning.rankstring import order_to_rank_string

    profile = _profile(a)
    plan = _plan(a, profile)
    d = decide(profile, a.granularity, a.criterion, a.k, plan)
    out = {**d, "rank_string (position i = rank of layer i)":
           order_to_rank_string(d["order"], profile["model"]["num_layers"]),
           "prunable": list(plan.prunable)}
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


def _parse_ks(text: str) -> list[int]:
    from entrodrop.cli import CLIError

    try:
        if ".." in text:
            lo, hi = text.split("..")
            return list(range(int(lo), int(hi) + 1))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--ks must look like 0..8 or 0,2,4; got {text!r}") from None


def cmd_evaluate(a) -> int:
    from entrodrop.cli import _cal_settings, _write_json
    from entrodrop.service import budget_curves, decide, heldout_windows
    from pruning.apply import pruned
    from pruning.evaluate import count_parameters, evaluate_quality, measure_speed, weight_bytes

    loaded = _load(a)
    ids = heldout_windows(_cal_settings(a, a.calibration), loaded, a.heldout)
    report: dict = {"model": a.model, "heldout_windows": int(ids.shape[0]),
                    "seqlen": int(ids.shape[1]), "parameters": count_parameters(loaded.model),
                    "weight_bytes": weight_bytes(loaded.model)}
    base = evaluate_quality(loaded.model, ids, {}, batch_size=a.batch_size)["unpruned"]
    report["perplexity"] = base.perplexity
    print(f"{a.model}: perplexity {base.perplexity:.3f} on {ids.shape[0]}x{ids.shape[1]} held-out "
          f"tokens, {report['parameters'] / 1e6:.1f} M parameters")
    if a.ks or a.k is not None:
        profile = _profile(a)
        plan = _plan(a, profile)
    if a.k is not None:
        d = decide(profile, a.granularity, a.criterion, a.k, plan)

        def variant():
            return pruned(loaded.model, a.granularity, d["blocks"])

        q = evaluate_quality(loaded.model, ids, {"pruned": variant}, batch_size=a.batch_size)["pruned"]
        speed = measure_speed(loaded.model, variant, repeats=a.repeats)
        report["pruned"] = {"blocks": d["blocks"], **q.to_dict(), "speed": speed.to_dict()}
        print(f"{a.granularity}/{a.criterion} K={a.k} blocks {d['blocks']}: perplexity "
              f"{q.perplexity:.3f}, KL {q.kl:.4f}, top-1 {q.top1:.3f}; prefill x{speed.prefill_ratio:.2f}, "
              f"decode x{speed.decode_ratio:.2f}, params {speed.params_pruned / 1e6:.1f} M "
              f"of {speed.params_base / 1e6:.1f} M")
    if a.ks:
        rows = []
        for g in a.curve_granularities.split(","):
            for row in budget_curves(loaded, ids, profile, g, tuple(a.criteria.split(",")),
                                     _parse_ks(a.ks), plan, batch_size=a.batch_size):
                rows.append({"granularity": g, **row})
        report["curves"] = rows
        print(f"{'gran':5} {'criterion':9} {'K':>3} {'perplexity':>11} {'KL':>8} {'top-1':>6}")
        for r in rows:
            print(f"{r['granularity']:5} {r['criterion']:9} {r['k']:>3} {r['perplexity']:>11.3f} "
                  f"{r['kl']:>8.4f} {r['top1']:>6.3f}")
    if a.width_ratios:
        from entrodrop.service import width_curves, width_scores

        ratios = [float(x) for x in a.width_ratios.split(",")]
        scores = width_scores(loaded, _cal_settings(a, a.calibration), a.width_criteria.split(","),
                              batch_size=a.batch_size)
        rows = width_curves(loaded, ids, scores, ratios, mode=a.width_mode, batch_size=a.batch_size)
        report["width_curves"] = rows
        print(f"{'criterion':15} {'ratio':>6} {'perplexity':>11} {'KL':>8} {'top-1':>6}  ({a.width_mode})")
        for r in rows:
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:g}"
            print(f"{r['criterion']:15} {ratio:>6} {r['perplexity']:>11.3f} {r['kl']:>8.4f} {r['top1']:>6.3f}")
    if a.out:
        _write_json(a.out, report)
    return 0


def cmd_export(a) -> int:
    from entrodrop.service import decide, export_decision
    from pruning.export import check_export_target

    check_export_target(a.out, overwrite=a.overwrite)  # before minutes of analysis
    profile = _profile(a)
    plan = _plan(a, profile)
    d = decide(profile, a.granularity, a.criterion, a.k, plan)
    loaded = _load(a)
    from entrodrop.cli import _Progress

    progress = _Progress(a.quiet)
    out = export_decision(loaded, profile, d, a.out, overwrite=a.overwrite, progress=progress)
    progress.done()
    print(f"exported {a.granularity} K={a.k} (blocks {d['blocks']}) to {out}", file=sys.stderr)
    return 0


def cmd_width(a) -> int:
    from entrodrop.cli import _cal_settings, _Progress
    from entrodrop.service import width_export
    from pruning.export import check_export_target

    check_export_target(a.out, overwrite=a.overwrite)  # before loading and scoring
    loaded = _load(a)
    progress = _Progress(a.quiet)
    out = width_export(loaded, _cal_settings(a, a.calibration), a.criterion, a.ratio, a.out,
                       mode=a.mode, batch_size=a.batch_size, overwrite=a.overwrite,
                       progress=progress)
    progress.done()
    print(f"exported width-pruned model ({a.criterion}, ratio {a.ratio}) to {out}", file=sys.stderr)
    return 0


def add_commands(sub, add_model_args, add_calibration_args, add_estimator_args) -> None:
    p = sub.add_parser("prune-list", help="the ranked prune order and the first K blocks")
    add_model_args(p)
    add_calibration_args(p, multiple=False)
    add_estimator_args(p)
    _add_decision_args(p)
    p.set_defaults(func=cmd_prune_list)

    p = sub.add_parser("export", help="export the pruned model as a checkpoint")
    add_model_args(p)
    add_calibration_args(p, multiple=False)
    add_estimator_args(p)
    _add_decision_args(p)
    p.add_argument("--out", required=True, help="target folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty target")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="quality and speed of a model, or of a pruned variant")
    add_model_args(p)
    add_calibration_args(p, multiple=False)
    add_estimator_args(p)
    _add_decision_args(p, with_k=False)
    p.add_argument("--k", type=int, default=None, help="evaluate this pruned variant against the model")
    p.add_argument("--heldout", type=int, default=16, help="held-out windows for quality")
    p.add_argument("--ks", default=None, help="quality curves over these K, e.g. 0..8")
    p.add_argument("--criteria", default="knn,cosine", help="orders to compare in the curves")
    p.add_argument("--curve-granularities", default="layer,attn")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats for the speed ratios")
    p.add_argument("--width-ratios", default=None, help="width-pruning curves at these ratios, e.g. 1,0.9,0.8")
    p.add_argument("--width-criteria", default="taylor-entropy,taylor-ce,magnitude")
    p.add_argument("--width-mode", choices=["per_layer", "uniform"], default="per_layer")
    p.add_argument("--out", default=None, help="also write the figures as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("width", help="output-entropy Taylor width pruning of the MLPs")
    add_model_args(p)
    add_calibration_args(p, multiple=False)
    p.add_argument("--criterion", choices=["taylor-entropy", "taylor-ce", "magnitude"],
                   default="taylor-entropy")
    p.add_argument("--ratio", type=float, required=True,
                   help="per_layer (default, SPEC): keep round(ratio * hidden_size) neurons per "
                        "layer; uniform: keep this fraction of each layer's MLP neurons")
    p.add_argument("--mode", choices=["per_layer", "uniform"], default="per_layer")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_width)
