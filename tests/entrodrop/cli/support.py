"""Helpers of the CLI tests: the `entrodrop` command line run as a real subprocess."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SMALL = ["--samples", "6", "--seqlen", "16", "--bins", "8", "--knn-k", "3", "--renyi-alpha", "2"]
# The profile every block command starts from (tiny models, CPU).
ANALYSIS = ["--calibration", "builtin:random", "--samples", "6", "--seqlen", "16", "--knn-k", "3",
            "--device", "cpu"]


def run_cli(args, cache, *, module="entrodrop.cli", torchrun=None, timeout=600):
    """`python -m entrodrop.cli ARGS` from the repository root (this checkout's code)."""
    env = {**os.environ, "ENTRODROP_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "ENTRODROP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={torchrun}", "-m", module, *args]
    else:
        cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
