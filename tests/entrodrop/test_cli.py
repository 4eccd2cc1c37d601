"""The `entrodrop` command line, run as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--samples", "6", "--seqlen", "16", "--bins", "8", "--knn-k", "3", "--renyi-alpha", "2"]


def run_cli(args, cache, *, module="entrodrop.cli", torchrun=None, timeout=600):
    env = {**os.environ, "ENTRODROP_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "ENTRODROP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={torchrun}", "-m", module, *args]
    else:
        cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


def test_help_lists_commands(tmp_path):
    out = run_cli(["--help"], tmp_path)
    assert out.returncode == 0
    for cmd in ("analyze", "prune-list", "export", "evaluate", "width"):
        assert cmd in out.stdout


def test_analyze_writes_json_and_multiple_runs(tiny_llama_dir, tmp_path):
    out_file = tmp_path / "result.json"
    r = run_cli(["--quiet", "analyze", "--model", str(tiny_llama_dir), "--calibration", "builtin:random",
                 "--calibration", "builtin:selfgen", *SMALL, "--device", "cpu", "--out", str(out_file)],
                tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    data = json.loads(out_file.read_text())
    for key in ("model", "calibration", "settings", "entropy_curve", "blocks", "s_start", "runs"):
        assert key in data
    assert data["model"]["num_layers"] == 4 and data["model"]["spec"] == str(tiny_llama_dir)
    assert [run["calibration"]["spec"] for run in data["runs"]] == ["builtin:random", "builtin:selfgen"]
    assert set(data["blocks"]) == {"layer", "attn"}


def test_torchrun_two_processes_match_one(tiny_llama_dir, tmp_path):
    args = ["--quiet", "analyze", "--model", str(tiny_llama_dir), "--calibration", "builtin:random",
            *SMALL, "--device", "cpu", "--batch-size", "2", "--no-cache"]
    single = run_cli([*args, "--out", str(tmp_path / "one.json")], tmp_path / "c1")
    assert single.returncode == 0, single.stderr
    multi = run_cli([*args, "--out", str(tmp_path / "two.json")], tmp_path / "c2", torchrun=2)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert one["calibration"]["fingerprint"] == two["calibration"]["fingerprint"]
    for est in ("bucket", "knn", "renyi"):
        assert two["entropy_curve"][est] == pytest.approx(one["entropy_curve"][est], rel=1e-6, abs=1e-5)
        for g in ("layer", "attn"):
            assert two["blocks"][g]["delta_h"][est] == pytest.approx(
                one["blocks"][g]["delta_h"][est], rel=1e-6, abs=1e-5)
    assert two["blocks"]["attn"]["cosine"] == pytest.approx(one["blocks"]["attn"]["cosine"], abs=1e-6)
    assert two["sink"] == one["sink"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "/nonexistent/model/folder"], "does not exist"),
        (["--model", "someorg/not-a-real-model-xyz"], "not available offline"),
        (["--model", "demo:nope"], "unknown demo model"),
        (["--calibration", "/nonexistent/file.txt"], "file.txt"),
        (["--calibration", "preset:c4"], "offline"),
        (["--samples", "0"], "samples"),
        (["--seqlen", "1"], "seqlen"),
        (["--bins", "1"], "bins"),
        (["--knn-k", "0"], "knn_k"),
        (["--renyi-alpha", "1"], "renyi_alpha"),
        (["--skip-first", "-1"], "skip_first"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_llama_dir, tmp_path, args, needle):
    base = {"--model": str(tiny_llama_dir), "--calibration": "builtin:random", "--samples": "4",
            "--seqlen": "16", "--knn-k": "3", "--device": "cpu"}
    base.update(zip(args[::2], args[1::2], strict=True))
    argv = ["--quiet", "analyze", *[x for kv in base.items() for x in kv]]
    r = run_cli(argv, tmp_path / "cache")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert needle in lines[0]
