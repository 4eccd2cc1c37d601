"""`entrodrop analyze`: profile every block's entropy on one or more calibration sets.

Under torchrun (WORLD_SIZE > 1) every process joins the process group and takes part in
every forward pass; rank 0 alone reports and writes the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from analysis.settings import DEFAULT_CALIBRATION
from entrodrop import service
from entrodrop.cli.common import (
    ProgressBar,
    add_calibration_args,
    add_estimator_args,
    add_model_args,
    analysis_request,
    check_json_out,
    report_messages,
    write_json,
)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def distributed(device: str) -> Iterator[int]:
    """Under torchrun, join the process group for the command and leave it cleanly after;
    yields this process's rank (0 when not under torchrun)."""
    if world_size() <= 1:
        yield 0
        return
    import torch
    import torch.distributed as dist

    use_nccl = device != "cpu" and torch.cuda.is_available()
    if use_nccl:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if use_nccl else "gloo")
    try:
        yield dist.get_rank()
        dist.barrier()  # no rank tears down its connections while another still uses them
    finally:
        # Leaving without this, a rank may abort at exit ("terminate called without an
        # active exception") while the communication threads are still running.
        if joined:
            dist.destroy_process_group()


def cmd_analyze(a: argparse.Namespace) -> int:
    specs = a.calibration or [DEFAULT_CALIBRATION]
    check_json_out(a.out)  # before minutes of analysis
    with distributed(a.device) as rank:
        request = analysis_request(a, specs)
        if world_size() > 1:
            # Every rank must take part in every forward pass, so no rank may skip on a cache hit.
            request = replace(request, use_cache=False)
        progress = ProgressBar(a.quiet or rank != 0)
        result = service.analyze(request, progress=progress)
        progress.done()
    if rank != 0:
        return 0
    report_messages(result, a.quiet)
    if a.out:
        write_json(a.out, result.to_json())
        print(f"wrote {a.out} ({len(result.runs)} run(s), {result.seconds:.1f} s)", file=sys.stderr)
    else:
        json.dump(result.to_json(), sys.stdout, indent=2)
        print()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="profile every block's entropy on calibration data")
    add_model_args(p)
    add_calibration_args(p, multiple=True)
    add_estimator_args(p)
    p.add_argument("--out", default=None, help="write the JSON here (default: stdout)")
    p.set_defaults(func=cmd_analyze)
