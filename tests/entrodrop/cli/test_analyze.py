"""`entrodrop analyze` (entrodrop.cli.analyze), run as a real subprocess and under torchrun."""

import json

import pytest

from tests.entrodrop.cli.support import SMALL, run_cli


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


@pytest.mark.parametrize("load", ["memory", "stream"])
def test_torchrun_two_processes_match_one(tiny_llama_dir, tmp_path, load):
    args = ["--quiet", "analyze", "--model", str(tiny_llama_dir), "--calibration", "builtin:random",
            *SMALL, "--device", "cpu", "--batch-size", "2", "--no-cache",
            "--load", load]
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
