"""Quality over K for every block criterion, both granularities, on the demo models.

Run: .venv/bin/python bench/bench_criteria.py [--models demo:smollm2-135m,demo:gemma3-270m]
     [--samples 16] [--seqlen 128] [--held-out 8] [--ks 0..6] [--greedy-windows 4]
     [--greedy-steps 6] [--json out.json] [--markdown out.md]

For each model: one analysis of `builtin:licenses` (N x T windows, the profile every
profile criterion reads), the automatic S_start (bucket curve, last block frozen), then per
granularity the perplexity-greedy search on the first --greedy-windows calibration windows,
and one `quality_over_k` pass over --held-out held-out windows (disjoint from the
calibration windows) that evaluates every K of every criterion side by side. The table
cells are the held-out perplexity, with KL to the unpruned model and top-1 agreement.
Everything goes through `entrodrop.service`, the path the CLI and the dashboard use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.settings import CalibrationSettings, EstimatorSettings, ModelSettings  # noqa: E402
from entrodrop import service  # noqa: E402
from pruning.ranking import CRITERIA, GREEDY, expand_criteria  # noqa: E402

GRANULARITIES = ("layer", "attn")


def parse_ks(text: str) -> list[int]:
    if ".." in text:
        lo, hi = text.split("..")
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",")]


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def bench_model(spec: str, a: argparse.Namespace, criteria: list[str], ks: list[int]) -> dict:
    t0 = time.perf_counter()
    loaded = service.load(ModelSettings(spec=spec, device="cpu", load="memory"))
    cal = CalibrationSettings(spec="builtin:licenses", samples=a.samples, seqlen=a.seqlen)
    request = service.analysis_request(loaded_settings(spec), [cal], EstimatorSettings())
    profile = service.analyze(request, loaded=loaded).runs[0]
    plan = service.stage_plan(profile)
    held_out = service.held_out_windows(cal, loaded, a.held_out)
    selection = service.selection_windows(cal, loaded, a.greedy_windows)
    out = {"model": spec, "num_layers": profile.num_layers, "s_start": plan.s_start,
           "prunable": list(plan.prunable), "analysis_s": profile.seconds, "granularities": {}}
    for g in GRANULARITIES:
        g0 = time.perf_counter()
        greedy = None
        if GREEDY in criteria:
            last = [0.0]

            def progress(frac: float, msg: str, g=g, last=last) -> None:
                if time.perf_counter() - last[0] > 30:  # a line every 30 s is enough
                    last[0] = time.perf_counter()
                    print(f"  {spec} {g} greedy {frac:.0%}: {msg}", file=sys.stderr, flush=True)

            greedy = service.greedy_search(loaded, selection, g, plan, steps=a.greedy_steps,
                                           batch_size=a.batch_size, progress=progress)
        decisions = {c: service.decision(profile, g, c, 0, plan, greedy=greedy) for c in criteria}
        orders = {c: d.prune_sets() for c, d in decisions.items()}
        c0 = time.perf_counter()
        rows = service.quality_over_k(loaded, held_out, orders, g, ks, batch_size=a.batch_size)
        out["granularities"][g] = {
            "rows": rows,
            "orders": {c: list(d.order) for c, d in decisions.items()},
            "prune_sets": {c: {k: d.prune_set_at(k) for k in ks if k <= d.max_k}
                           for c, d in decisions.items()},
            "details": {c: d.details for c, d in decisions.items() if d.details},
            "greedy_s": c0 - g0 if greedy else None,
            "curves_s": time.perf_counter() - c0,
        }
        print(f"{spec} {g}: greedy {out['granularities'][g]['greedy_s'] or 0:.0f} s, "
              f"curves {out['granularities'][g]['curves_s']:.0f} s", file=sys.stderr, flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def loaded_settings(spec: str) -> ModelSettings:
    return ModelSettings(spec=spec, device="cpu", load="memory")


def cell(row: dict | None) -> str:
    if row is None:
        return "-"
    ppl = row["perplexity"]
    text = "inf" if ppl is None or not math.isfinite(ppl) else (
        f"{ppl:.0f}" if ppl >= 1000 else f"{ppl:.2f}")
    kl = "-" if row["kl"] is None else f"{row['kl']:.2f}"
    return f"{text} ({kl}, {row['top1']:.2f})"


def markdown(results: list[dict], criteria: list[str], ks: list[int]) -> str:
    lines = []
    for res in results:
        for g in GRANULARITIES:
            data = res["granularities"][g]
            by = {(r["criterion"], r["k"]): r for r in data["rows"]}
            lines.append(f"#### {res['model']}, {g} blocks (S_start = {res['s_start']}, "
                         f"prunable {res['prunable'][0]}..{res['prunable'][-1]})")
            lines.append("")
            lines.append("| criterion | " + " | ".join(f"K={k}" for k in ks if k) + " |")
            lines.append("|---|" + "---|" * len([k for k in ks if k]))
            for c in criteria:
                lines.append(f"| {c} | " + " | ".join(cell(by.get((c, k))) for k in ks if k) + " |")
            base = by.get((criteria[0], 0))
            lines.append("")
            lines.append(f"Unpruned: {cell(base)}. Prune sets at K = {max(ks)}: " + "; ".join(
                f"{c} {sorted(s.get(max(ks), s.get(str(max(ks)), [])))}"
                for c, s in data["prune_sets"].items()) + ".")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="demo:smollm2-135m,demo:gemma3-270m")
    ap.add_argument("--criteria", default="all", help=f"default: all ({', '.join(CRITERIA)})")
    ap.add_argument("--samples", type=int, default=16, help="N calibration windows")
    ap.add_argument("--seqlen", type=int, default=128, help="T tokens per window")
    ap.add_argument("--held-out", type=int, default=8)
    ap.add_argument("--ks", default="0..6")
    ap.add_argument("--greedy-windows", type=int, default=4)
    ap.add_argument("--greedy-steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    a = ap.parse_args()
    criteria = expand_criteria(a.criteria)
    ks = parse_ks(a.ks)
    print(f"load average before: {load_average()}; {os.cpu_count()} CPUs", file=sys.stderr)
    results = [bench_model(spec, a, criteria, ks) for spec in a.models.split(",")]
    print(f"load average after: {load_average()}", file=sys.stderr)
    report = {"settings": {k: v for k, v in vars(a).items() if k not in ("json", "markdown")},
              "results": results}
    if a.json:
        a.json.write_text(json.dumps(report, indent=1, default=str))
    text = markdown(results, criteria, ks)
    if a.markdown:
        a.markdown.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
