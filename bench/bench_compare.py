"""Benchmark driver: in-memory analysis speed of two checkouts, side by side.

Run: .venv/bin/python bench/bench_compare.py --old /tmp/old --new . [--rounds 3]
     [--samples 32] [--seqlen 128] [--repeats 3] [--model demo:smollm2-135m] [--json out.json]

Each round runs `bench/bench_analysis.py --skip-memory` once in each checkout, in a fresh
process whose PYTHONPATH is that checkout, so each side imports only its own code. The
order alternates between rounds (old-new, new-old, ...): on a shared machine the load
drifts, and alternating puts the drift on both sides equally.

Reported: every run's bare-forward and analysis medians, the ratio of medians new/old of
the analysis time (the regression figure) and of the bare forward (a control: both
checkouts run the same transformers forward, so it shows how much the machine alone moved),
each side's overhead ratio (analysis / bare, median over its runs), and their quotient: the
analysis new/old with the machine's speed in each run divided out (both sides' bare forward
is the same transformers code).

The checkout's own `bench/bench_analysis.py` is used, so a checkout whose script predates
`--json` with `--skip-memory` still works: its one summary line is parsed instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUMMARY = re.compile(r"bare forward ([\d.]+) s, analysis ([\d.]+) s, ratio ([\d.]+)")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def run_once(checkout: Path, python: str, bench_args: list[str]) -> dict:
    """One `bench_analysis.py --skip-memory` run in `checkout`; its medians and ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "result.json"
        env = dict(os.environ, PYTHONPATH=str(checkout))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [python, str(checkout / "bench" / "bench_analysis.py"), "--skip-memory",
             "--json", str(out_json), *bench_args],
            cwd=checkout, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"bench_analysis failed in {checkout}:\n{proc.stderr[-3000:]}")
        if out_json.is_file():
            o = json.loads(out_json.read_text())["overhead"]
            res = {"bare_s": o["bare_s"], "analysis_s": o["analysis_s"], "ratio": o["ratio"],
                   "paired_ratios": o.get("paired_ratios")}
        else:
            m = SUMMARY.search(proc.stdout)
            if m is None:
                sys.exit(f"no summary line in the output of {checkout}:\n{proc.stdout[-2000:]}")
            res = {"bare_s": float(m[1]), "analysis_s": float(m[2]), "ratio": float(m[3]),
                   "paired_ratios": None}
    res["wall_s"] = wall
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="checkout of the baseline")
    ap.add_argument("--new", type=Path, required=True, help="checkout under test")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="demo:smollm2-135m")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="bench_analysis' own repeats")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()

    sides = {"old": a.old.resolve(), "new": a.new.resolve()}
    for name, path in sides.items():
        if not (path / "bench" / "bench_analysis.py").is_file():
            sys.exit(f"--{name} {path} has no bench/bench_analysis.py")
    bench_args = ["--model", a.model, "--device", a.device, "--samples", str(a.samples),
                  "--seqlen", str(a.seqlen), "--repeats", str(a.repeats)]
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    loads = [load_average()]
    print(f"load average at start: {loads[0]}", flush=True)
    for r in range(a.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for name in order:
            res = run_once(sides[name], a.python, bench_args)
            res["round"] = r + 1
            runs[name].append(res)
            print(f"round {r + 1} {name}: bare {res['bare_s']:.2f} s, analysis "
                  f"{res['analysis_s']:.2f} s, ratio {res['ratio']:.3f} "
                  f"(run {res['wall_s']:.0f} s, load {load_average()})", flush=True)
        loads.append(load_average())

    med = {name: {k: statistics.median(x[k] for x in rs) for k in ("bare_s", "analysis_s", "ratio")}
           for name, rs in runs.items()}
    summary = {
        "analysis_new_over_old": med["new"]["analysis_s"] / med["old"]["analysis_s"],
        "bare_new_over_old": med["new"]["bare_s"] / med["old"]["bare_s"],
        "overhead_old": med["old"]["ratio"], "overhead_new": med["new"]["ratio"],
        # Both checkouts run the same bare forward, so the ratio of their overheads is the
        # analysis' new/old with each run's machine speed divided out: on a shared machine
        # whose load moves several-fold between runs, the steadier of the two estimates.
        "analysis_new_over_old_load_normalised": med["new"]["ratio"] / med["old"]["ratio"],
        # Per round, new/old of the analysis time: how much the figure moves between rounds.
        "analysis_new_over_old_per_round": [
            n["analysis_s"] / o["analysis_s"] for o, n in zip(
                sorted(runs["old"], key=lambda x: x["round"]),
                sorted(runs["new"], key=lambda x: x["round"]), strict=True)],
    }
    print(f"analysis time new/old (ratio of medians) {summary['analysis_new_over_old']:.3f}; "
          f"load-normalised (overhead new / overhead old) "
          f"{summary['analysis_new_over_old_load_normalised']:.3f}; "
          f"bare forward new/old {summary['bare_new_over_old']:.3f} (control); overhead "
          f"analysis/bare old {summary['overhead_old']:.3f}, new {summary['overhead_new']:.3f}; "
          f"per round new/old "
          f"{', '.join(f'{x:.3f}' for x in summary['analysis_new_over_old_per_round'])}")
    print(f"load averages after each round: {loads}")
    if a.json:
        a.json.write_text(json.dumps({"settings": vars(a) | {"old": str(sides['old']),
                                                              "new": str(sides['new']),
                                                              "json": str(a.json)},
                                      "runs": runs, "medians": med, "summary": summary,
                                      "load_averages": loads}, indent=2, default=str))


if __name__ == "__main__":
    main()
