"""`entrodrop width`: output-entropy Taylor width pruning of the MLPs, exported as a
standard checkpoint."""

from __future__ import annotations

import argparse
import sys

from analysis.taylor import TAYLOR_CRITERIA, TaylorCriterion
from entrodrop import service
from entrodrop.cli.common import (
    DEFAULT_KEEP_MODE,
    KEEP_MODES,
    ProgressBar,
    add_batch_size_arg,
    add_calibration_args,
    add_format_args,
    add_model_args,
    calibration_settings,
    format_note,
    load,
    model_settings,
)

DEFAULT_WIDTH_CRITERION: TaylorCriterion = "taylor-entropy"
"""The neuron importance of the method: Taylor scores with the output entropy as the loss."""


def cmd_width(a: argparse.Namespace) -> int:
    service.check_export_target(a.out, overwrite=a.overwrite)  # before loading and scoring
    cal = calibration_settings(a, a.calibration)
    service.check_settings(model_settings(a), [cal], batch_size=a.batch_size,
                           width_ratios=[a.ratio], width_mode=a.mode)
    loaded = load(a)
    progress = ProgressBar(a.quiet)
    scores = service.width_scores(loaded, cal, [a.criterion], batch_size=a.batch_size,
                                  progress=progress)[a.criterion]
    out = service.export_width(loaded, scores, cal, a.criterion, a.ratio, a.out, mode=a.mode,
                               overwrite=a.overwrite, fmt=a.format, gguf_type=a.gguf_type)
    progress.done()
    print(f"exported width-pruned model ({a.criterion}, ratio {a.ratio}) to {out}"
          f"{format_note(a, out)}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("width", help="output-entropy Taylor width pruning of the MLPs")
    add_model_args(p)
    add_calibration_args(p, multiple=False)
    p.add_argument("--criterion", choices=TAYLOR_CRITERIA, default=DEFAULT_WIDTH_CRITERION)
    p.add_argument("--ratio", type=float, required=True,
                   help="per_layer (default, SPEC): keep int(ratio * hidden_size) neurons per "
                        "layer; uniform: keep this fraction of each layer's MLP neurons")
    p.add_argument("--mode", choices=KEEP_MODES, default=DEFAULT_KEEP_MODE)
    add_batch_size_arg(p)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    add_format_args(p)
    p.set_defaults(func=cmd_width)
