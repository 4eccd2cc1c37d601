"""Block pruning commands: `prune-list` (the decision), `evaluate` (what it costs and
saves, and quality curves over K or width ratios) and `export` (the pruned checkpoint)."""

from __future__ import annotations

import argparse
import json
import os
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
    add_greedy_args,
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
from pruning.benchmarks import (
    NOT_PRUNED,
    BenchmarkRun,
    BenchmarkSettings,
    Variant,
    accuracy_rows,
    manifest_record,
    variants_over_k,
)
from pruning.benchmarks import harness_version as lm_eval_version
from pruning.compare import criteria_table
from pruning.decision import Decision
from pruning.gguf_export import GGUF_TYPES
from pruning.greedy import GreedyResult
from pruning.manifest import read_manifest
from pruning.ranking import BASELINE, GREEDY, expand_criteria
from pruning.stages import StagePlan, max_k
from pruning.vllm_layout import DEFAULT_LAYOUT, LAYOUTS

ENGINES = ("transformers", "llama.cpp", "both")
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


def greedy_of(a: argparse.Namespace, plan: StagePlan, granularity: str,
              loaded: service.Model | None = None) -> GreedyResult:
    """The perplexity-greedy search for `granularity` under `plan`, run once per command
    on the first --greedy-windows calibration windows (it loads the model if needed)."""
    found = a.__dict__.setdefault("_greedy", {})
    if granularity not in found:
        if loaded is None:
            loaded = getattr(a, "_loaded", None) or load(a)
        a._loaded = loaded  # one load per command, whichever granularity asks first
        ids = service.selection_windows(calibration_settings(a, a.calibration), loaded,
                                        a.greedy_windows)
        cost = service.greedy_estimate(plan, a.greedy_steps)
        if not a.quiet:
            print(f"ppl_greedy ({granularity}): {cost['steps']} steps over "
                  f"{cost['candidates']} blocks = {cost['variant_passes']} variant passes over "
                  f"{ids.shape[0]}x{ids.shape[1]} calibration tokens", file=sys.stderr)
        progress = ProgressBar(a.quiet)
        found[granularity] = service.greedy_search(loaded, ids, granularity, plan,
                                                   steps=a.greedy_steps,
                                                   batch_size=a.batch_size, progress=progress)
        progress.done()
    return found[granularity]


def decision_for(a: argparse.Namespace, profile: Profile, plan: StagePlan, granularity: str,
                 criterion: str, k: int, loaded: service.Model | None = None) -> Decision:
    """Any criterion's decision; ppl_greedy runs its search first."""
    greedy = greedy_of(a, plan, granularity, loaded) if criterion == GREEDY else None
    return service.decision(profile, granularity, criterion, k, plan, greedy=greedy)


def decision_of(a: argparse.Namespace, profile: Profile, plan: StagePlan,
                loaded: service.Model | None = None) -> Decision:
    return decision_for(a, profile, plan, a.granularity, a.criterion, a.k, loaded)


def cmd_prune_list(a: argparse.Namespace) -> int:
    profile = profile_of(a)
    plan = plan_of(a, profile)
    if a.criteria:
        criteria = expand_criteria(a.criteria)
        decisions = {c: decision_for(a, profile, plan, a.granularity, c, a.k) for c in criteria}
        out = {"granularity": a.granularity, "k": a.k, "s_start": plan.s_start,
               "policy": plan.policy, "prunable": list(plan.prunable),
               "decisions": {c: service.prune_list_record(d) for c, d in decisions.items()},
               "comparison": criteria_table(decisions, a.k)}
    else:
        out = service.prune_list_record(decision_of(a, profile, plan))
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
    line = (f"{a.granularity}/{d.criterion} K={a.k} blocks {blocks}: perplexity "
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
              plan: StagePlan, ks: list[int], details: dict) -> list[dict]:
    criteria = expand_criteria(a.criteria)
    # A K the plan cannot prune (more than the prunable blocks, or every block) is left
    # out with a note rather than failing the whole curve.
    limit = max_k(plan)
    skipped = [k for k in ks if k > limit]
    if skipped:
        print(f"note: K = {', '.join(map(str, skipped))} left out: at most {limit} blocks can "
              "be pruned under this stage plan", file=sys.stderr)
    ks = [k for k in ks if k <= limit]
    rows = []
    for g in a.curve_granularities.split(","):
        if g not in GRANULARITIES:
            raise CLIError(f"--curve-granularities takes {' and '.join(GRANULARITIES)}; got {g!r}")
        decisions = {c: decision_for(a, profile, plan, g, c, 0, loaded) for c in criteria}
        details[g] = {c: d.details for c, d in decisions.items() if d.details}
        orders = {c: d.prune_sets() for c, d in decisions.items()}
        for row in service.quality_over_k(loaded, ids, orders, g, ks, batch_size=a.batch_size):
            rows.append({"granularity": g, **row})
    print(f"{'gran':5} {'criterion':13} {'K':>3} {'perplexity':>11} {'KL':>8} {'top-1':>6}")
    for r in rows:
        print(f"{r['granularity']:5} {r['criterion']:13} {r['k']:>3} "
              f"{_num(r['perplexity'], '>11.3f'):>11} {_num(r['kl'], '>8.4f'):>8} "
              f"{_num(r['top1'], '>6.3f'):>6}")
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


def benchmark_settings(a: argparse.Namespace) -> BenchmarkSettings | None:
    """--tasks, --include-path, --limit and --batch-size as checked settings (None without
    --tasks); unknown task names fail here, before the model loads."""
    if not a.tasks:
        if a.include_path or a.limit is not None or getattr(a, "record", False):
            raise CLIError("--include-path, --limit and --record need --tasks")
        return None
    if getattr(a, "record", False):
        if a.ks or a.k is not None:
            raise CLIError("--record adds the scores of --model as it is to its manifest; "
                           "drop --ks and --k")
        if read_manifest(a.model) is None:
            raise CLIError(f"--record needs --model to be an export folder of this tool (with "
                           f"entrodrop.json); {a.model} is not")
    if a.quiet or os.environ.get("ENTRODROP_PROGRESS") == "0":
        # The harness and `datasets` draw their own tqdm bars; tqdm reads this default.
        os.environ["TQDM_DISABLE"] = "1"
    tasks = tuple(t.strip() for t in a.tasks.split(","))
    settings = BenchmarkSettings(tasks, a.include_path, a.limit, a.batch_size)
    service.check_benchmark_tasks(settings)
    if service.load_plan(model_settings(a)).mode == "stream":
        raise CLIError(f"lm-eval benchmarks need the whole model in memory, and {a.model} would "
                       "be streamed layer by layer; use --load memory if it fits")
    return settings


def benchmark_table(rows: list[dict]) -> list[str]:
    """Accuracy against K, one line per granularity, criterion, task and metric, one column
    per K (as the paper's table): value and, in brackets, its standard error."""
    ks = sorted({r["k"] for r in rows})
    lines = {}
    for r in rows:
        key = (r["granularity"] or "-", r["criterion"], r["task"], r["metric"])
        err = "" if r["stderr"] is None else f"({r['stderr']:.3f})"
        lines.setdefault(key, {})[r["k"]] = f"{r['value']:.3f}{err}"
    width = max([len(k[2]) for k in lines] + [4])
    head = f"{'gran':5} {'criterion':10} {'task':{width}} {'metric':9} " + " ".join(
        f"{'K=' + str(k):>13}" for k in ks)
    out = [head]
    for (g, c, t, m), cells in lines.items():
        out.append(f"{g:5} {c:10} {t:{width}} {m:9} " + " ".join(
            f"{cells.get(k, '-'):>13}" for k in ks))
    return out


def _benchmarks(a: argparse.Namespace, loaded: service.Model, settings: BenchmarkSettings,
                variants: list[Variant] | None) -> dict:
    progress = ProgressBar(a.quiet)
    bars = not progress.quiet
    if variants is None:
        runs = [service.benchmark_model(loaded, settings, progress=progress, bars=bars)]
    else:
        runs = service.benchmark(loaded, variants, settings, progress=progress, bars=bars)
    progress.done()
    rows = accuracy_rows(runs)
    limit = f", first {settings.limit} documents per task" if settings.limit else ""
    print(f"lm-eval {lm_eval_version()}{limit} on {a.model}:")
    for line in benchmark_table(rows):
        print(line)
    if getattr(a, "record", False):
        path = service.record_in_export(loaded.source_path, runs)
        print(f"recorded in {path}", file=sys.stderr)
    return {"harness": "lm-eval", "harness_version": lm_eval_version(),
            "settings": settings.to_json(), "rows": rows}


def _benchmark_variants(a: argparse.Namespace, profile: Profile | None, plan: StagePlan | None,
                        ks: list[int] | None) -> list[Variant] | None:
    """--ks: every criterion's first K blocks at every curve granularity; --k: that
    variant next to the unpruned model; neither: None (the model as loaded)."""
    if ks is not None:
        variants = []
        for g in a.curve_granularities.split(","):
            orders = {c: decision_for(a, profile, plan, g, c, 0).prune_sets()
                      for c in expand_criteria(a.criteria)}
            variants += variants_over_k(orders, g, ks)
        return variants
    if a.k is not None:
        d = decision_of(a, profile, plan)
        return [Variant(None, NOT_PRUNED, 0),
                Variant(d.granularity, d.criterion, d.k, tuple(sorted(d.blocks)))]
    return None


def cmd_evaluate(a: argparse.Namespace) -> int:
    ks = parse_ks(a.ks) if a.ks else None  # malformed lists fail before any work
    ratios = parse_ratios(a.width_ratios) if a.width_ratios else None
    check_json_out(a.out)
    bench = benchmark_settings(a)
    # Every setting against the model's config, before it loads.
    service.check_settings(model_settings(a), [calibration_settings(a, a.calibration)],
                           estimators=estimator_settings(a) if ks or a.k is not None else None,
                           batch_size=a.batch_size, width_ratios=ratios or (),
                           width_mode=a.width_mode, width_export=False, held_out=a.held_out)
    loaded = load(a)
    ids = service.held_out_windows(calibration_settings(a, a.calibration), loaded, a.held_out)
    report = _unpruned_figures(a, loaded, ids)
    profile = plan = None
    if ks is not None:
        expand_criteria(a.criteria)  # a bad name fails before the analysis
    if ks is not None or a.k is not None:
        profile = profile_of(a)
        plan = plan_of(a, profile)
    if a.k is not None:
        d = decision_of(a, profile, plan, loaded)
        report["pruned"] = {**_pruned_figures(a, loaded, ids, d), "criterion": d.criterion,
                            "criterion_details": d.details}
    if ks is not None:
        details: dict = {}
        report["curves"] = _k_curves(a, loaded, ids, profile, plan, ks, details)
        report["criteria_details"] = details
    if ratios is not None:
        report["width_curves"] = _width_curves(a, loaded, ids, ratios)
    if bench is not None:
        variants = _benchmark_variants(a, profile, plan, ks)
        report["benchmarks"] = _benchmarks(a, loaded, bench, variants)
    if a.out:
        write_json(a.out, report)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    # Both before minutes of analysis.
    service.check_export_target(a.out, overwrite=a.overwrite)
    service.check_export_layout(model_settings(a), a.granularity, a.layout, a.format)
    bench = benchmark_settings(a)
    profile = profile_of(a)
    # A profile-decided criterion is checked (e.g. K) before the model loads.
    loaded = load(a) if a.criterion == GREEDY else None
    d = decision_of(a, profile, plan_of(a, profile), loaded)
    loaded = loaded or load(a)
    benchmarks = None
    if bench is not None:
        # Scored in memory, pruned in place, before the export is written.
        variant = Variant(d.granularity, d.criterion, d.k, tuple(sorted(d.blocks)))
        bars = not ProgressBar(a.quiet).quiet
        runs: list[BenchmarkRun] = service.benchmark(loaded, [variant], bench, bars=bars)
        for line in benchmark_table(accuracy_rows(runs)):
            print(line)
        benchmarks = manifest_record(runs)
    progress = ProgressBar(a.quiet)
    out = service.export_blocks(loaded, profile, d, a.out, overwrite=a.overwrite,
                                benchmarks=benchmarks, progress=progress, layout=a.layout,
                                fmt=a.format, gguf_type=a.gguf_type)
    progress.done()
    print(f"exported {a.granularity} K={a.k} (blocks {list(d.blocks)}, layout {a.layout}) "
          f"to {out}{format_note(a, out)}", file=sys.stderr)
    return 0


def _add_profile_args(p: argparse.ArgumentParser, with_k: bool = True) -> None:
    add_model_args(p)
    add_calibration_args(p, multiple=False)
    add_estimator_args(p)
    add_decision_args(p, with_k=with_k)
    add_greedy_args(p)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune-list", help="the ranked prune order and the first K blocks")
    _add_profile_args(p)
    p.add_argument("--criteria", default=None,
                   help="several criteria side by side (comma-separated; 'random' = "
                        "random:0,1,2, 'all' = every one): each order and prune set, and the "
                        "overlap, Jaccard and Kendall tau of every pair at --k")
    p.set_defaults(func=cmd_prune_list)

    p = sub.add_parser("export", help="export the pruned model as a checkpoint")
    _add_profile_args(p)
    p.add_argument("--out", required=True, help="target folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty target")
    add_benchmark_args(p, record=False)
    p.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT,
                   help="vllm: write attn exports of Llama-style models in the DeciLM "
                        "(nemotron-nas) form that vLLM runs and transformers also loads "
                        "(both with trust_remote_code)")
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
                   help="criteria compared in the curves (comma-separated; 'random' = "
                        "random:0,1,2, 'all' = every one; ppl_greedy runs its search first)")
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
    add_benchmark_args(p, record=True)
    p.set_defaults(func=cmd_evaluate)


def add_benchmark_args(p: argparse.ArgumentParser, *, record: bool) -> None:
    g = p.add_argument_group("standard benchmarks (lm-evaluation-harness)")
    g.add_argument("--tasks", default=None,
                   help="lm-eval tasks, comma-separated (e.g. hellaswag,arc_easy, or tasks "
                        "defined in --include-path); evaluate scores every variant of --ks "
                        "(or --k, or the model as loaded), export records them in the manifest")
    g.add_argument("--include-path", default=None,
                   help="a directory of your own lm-eval YAML tasks (e.g. over local files)")
    g.add_argument("--limit", type=int, default=None,
                   help="score only the first N documents of each task")
    if record:
        g.add_argument("--record", action="store_true",
                       help="add the scores to --model's entrodrop.json (an export folder)")
