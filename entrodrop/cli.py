"""`entrodrop`: the command-line interface.

User errors print one line on stderr and exit with code 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from entrodrop.service import user_error_types

    return (CLIError, *user_error_types())


class _Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet or os.environ.get("ENTRODROP_PROGRESS") == "0"
        self.last = ""

    def __call__(self, frac: float, msg: str) -> None:
        if self.quiet:
            return
        width = 30
        filled = int(max(0.0, min(1.0, frac)) * width)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}% {msg}"
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line[:120].ljust(len(self.last)))
        elif line != self.last:
            sys.stderr.write(line + "\n")
        self.last = line[:120]
        sys.stderr.flush()

    def done(self) -> None:
        if not self.quiet and sys.stderr.isatty() and self.last:
            sys.stderr.write("\n")


# --------------------------------------------------------------------------- arguments


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo:smollm2-135m",
                   help="demo:smollm2-135m, demo:gemma3-270m, a model folder, a .gguf file or a hub id")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the model's own Python code (off by default)")
    p.add_argument("--device-map-auto", action="store_true",
                   help="spread a model larger than one GPU with accelerate")


def _add_calibration_args(p: argparse.ArgumentParser, multiple: bool) -> None:
    if multiple:
        p.add_argument("--calibration", action="append", default=None,
                       help="builtin:licenses|pydocs|selfgen|random, preset:c4|wikitext2|law|medicine, "
                            "or a .txt/.jsonl/.csv/.parquet/.npy file; repeat for several sets")
    else:
        p.add_argument("--calibration", default="builtin:licenses")
    p.add_argument("--samples", type=int, default=None, help="N windows (default 32 CPU / 128 GPU)")
    p.add_argument("--seqlen", type=int, default=None, help="T tokens per window (default 128 CPU / 256 GPU)")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--text-column", default=None)


def _add_estimator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bins", type=int, default=20)
    p.add_argument("--knn-k", type=int, default=25)
    p.add_argument("--renyi-alpha", type=float, default=4.0)
    p.add_argument("--skip-first", type=int, default=1,
                   help="positions left out of the statistics (attention sink); 0 = research code")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write cache/profiles")


def _model_settings(a):
    from analysis.settings import ModelSettings

    return ModelSettings(a.model, a.device, a.dtype, a.trust_remote_code, a.device_map_auto).validate()


def _cal_settings(a, spec: str):
    from analysis.settings import CalibrationSettings

    return CalibrationSettings(spec, a.samples, a.seqlen, a.seed, a.text_column).validate()


def _est_settings(a):
    from analysis.settings import EstimatorSettings

    return EstimatorSettings(a.bins, a.knn_k, a.renyi_alpha, a.skip_first, a.batch_size).validate()


def _request(a, specs: Sequence[str]):
    from analysis.settings import AnalysisRequest

    return AnalysisRequest(_model_settings(a), tuple(_cal_settings(a, s) for s in specs),
                           _est_settings(a), use_cache=not a.no_cache)


def _write_json(path: str, data: dict) -> None:
    from analysis.paths import atomic_write_text

    out = Path(path)
    if out.is_dir():
        raise CLIError(f"--out {path!r} is a folder; give a file name such as result.json")
    atomic_write_text(out, json.dumps(data, indent=2))


# --------------------------------------------------------------------------- commands


def report_messages(result, quiet: bool) -> None:
    """Cache hits are news; warnings (bad cache entries, non-finite states) always show."""
    for msg in result.warnings if quiet else result.messages:
        print(msg, file=sys.stderr)


def _init_distributed(device: str) -> int:
    """Under torchrun, join the process group; returns this process's rank (0 otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    use_nccl = device != "cpu" and torch.cuda.is_available()
    if use_nccl:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_nccl else "gloo")
    return dist.get_rank()


def cmd_analyze(a) -> int:
    from dataclasses import replace

    from entrodrop.service import analyze

    specs = a.calibration or ["builtin:licenses"]
    rank = _init_distributed(a.device)
    request = _request(a, specs)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        # Every rank must take part in every forward pass, so no rank may skip on a cache hit.
        request = replace(request, use_cache=False)
    progress = _Progress(a.quiet or rank != 0)
    result = analyze(request, progress=progress)
    progress.done()
    if rank != 0:
        return 0
    report_messages(result, a.quiet)
    if a.out:
        _write_json(a.out, result.to_json())
        print(f"wrote {a.out} ({len(result.runs)} run(s), {result.seconds:.1f} s)", file=sys.stderr)
    else:
        json.dump(result.to_json(), sys.stdout, indent=2)
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entrodrop",
        description="Entropy-based pruning of causal language models (EntroDrop Studio).",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="profile every block's entropy on calibration data")
    _add_model_args(p)
    _add_calibration_args(p, multiple=True)
    _add_estimator_args(p)
    p.add_argument("--out", default=None, help="write the JSON here (default: stdout)")
    p.set_defaults(func=cmd_analyze)

    try:
        from entrodrop import cli_pruning
    except ImportError:
        cli_pruning = None
    if cli_pruning is not None:
        cli_pruning.add_commands(sub, _add_model_args, _add_calibration_args, _add_estimator_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # transformers' GGUF conversion draws a raw tqdm bar; tqdm reads this when imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    _quiet_libraries()
    parser = build_parser()
    a = parser.parse_args(argv)
    a.quiet = getattr(a, "quiet", False)
    errors = _user_errors()
    try:
        return a.func(a) or 0
    except errors as e:
        print(f"entrodrop {a.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(f"entrodrop {a.command}: error: out of memory; use a smaller --batch-size or "
              "--samples", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"entrodrop {a.command}: interrupted", file=sys.stderr)
        return 130


def _out_of_memory(e: BaseException) -> bool:
    import torch

    # torch.OutOfMemoryError is the CUDA allocator's; MPS and others only say it in the text.
    return (isinstance(e, (MemoryError, torch.OutOfMemoryError))
            or "out of memory" in str(e).lower())


def _quiet_libraries() -> None:
    """The CLI draws its own progress; library bars and warnings would break one-line errors."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())
