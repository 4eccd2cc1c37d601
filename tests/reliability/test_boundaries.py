"""Every validated boundary, driven through the CLI from a table: the value at the boundary
runs (exit 0, output written), the value just beyond it is refused before any work (exit 2,
exactly one line on stderr, nothing written to --out). Files of the wrong kind are refused the
same way. `analyze`, `export` and `width` run in-process through `entrodrop.cli.main`; a few
cases also run as real subprocesses.

The tiny llama has 256 positions, hidden size D = 32 and MLP width I = 64, so a per-layer
width ratio keeps int(ratio * 32) neurons and 2.0 keeps all 64.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from entrodrop import cli
from tests.reliability.support import assert_user_error, copy_folder, run_many

BASE = {"--calibration": "builtin:random", "--samples": "4", "--seqlen": "16", "--bins": "8",
        "--knn-k": "3", "--renyi-alpha": "2", "--device": "cpu"}
WIDTH_BASE = {"--calibration": "builtin:random", "--samples": "4", "--seqlen": "16",
              "--device": "cpu", "--criterion": "magnitude"}

# (command, {option: value}, needle of the refusal, or None: the value at the boundary runs)
CASES = {
    # T against the model's 256 positions.
    "T-at-positions": ("analyze", {"--seqlen": "256", "--samples": "2"}, None),
    "T-beyond-positions": ("analyze", {"--seqlen": "257"}, "longer than the 256 positions"),
    "T-beyond-positions-export": ("export", {"--seqlen": "257"}, "longer than the 256"),
    "T-beyond-positions-width": ("width", {"--seqlen": "257", "--ratio": "1"},
                                 "longer than the 256"),
    "T-beyond-the-setting": ("analyze", {"--seqlen": "131073"}, "seqlen (T) must be between"),
    # Renyi alpha next to 1, on both sides.
    "alpha-at-gap-above": ("analyze", {"--renyi-alpha": "1.001"}, None),
    "alpha-within-gap-above": ("analyze", {"--renyi-alpha": "1.0009"}, "within 0.001 of 1"),
    "alpha-at-gap-below": ("analyze", {"--renyi-alpha": "0.999"}, None),
    "alpha-within-gap-below": ("analyze", {"--renyi-alpha": "0.9991"}, "within 0.001 of 1"),
    "alpha-nan": ("analyze", {"--renyi-alpha": "nan"}, "renyi_alpha must be > 0"),
    "alpha-at-max": ("analyze", {"--renyi-alpha": "1000"}, "renyi_alpha must be > 0, < 1000"),
    # Integers that overflow what they become.
    "seed-at-int64": ("analyze", {"--seed": str(2**63 - 1)}, None),
    "seed-beyond-int64": ("analyze", {"--seed": str(2**63)}, "seed must be between 0 and"),
    "seed-negative": ("analyze", {"--seed": "-1"}, "seed must be between 0 and"),
    "NxT-beyond-int32": ("analyze", {"--samples": "16384", "--seqlen": "131072"},
                         "N x T = 16384 x 131072"),
    "NxT-beyond-int32-export": ("export", {"--samples": "16384", "--seqlen": "131072"},
                                "N x T = 16384 x 131072"),
    "batch-beyond": ("analyze", {"--batch-size": "4097"}, "batch_size must be between"),
    "knn-k-at-T": ("analyze", {"--knn-k": "14"}, None),  # T - skip_first = 15 > 14
    "knn-k-beyond-T": ("analyze", {"--knn-k": "15"}, "knn_k=15 must be smaller"),
    # Width ratios: int(ratio * 32) < 64 prunes; 2.0 keeps every neuron.
    "ratio-at-keep-all": ("width", {"--ratio": "1.98"}, None),
    "ratio-keeps-all": ("width", {"--ratio": "2"}, "keeps all 64 MLP neurons"),
    "ratio-typo": ("width", {"--ratio": "1e9"}, "keeps all 64 MLP neurons"),
    "ratio-uniform-at": ("width", {"--ratio": "0.99", "--mode": "uniform"}, None),
    "ratio-uniform-keeps-all": ("width", {"--ratio": "1", "--mode": "uniform"},
                                "keeps every neuron in mode 'uniform'"),
    "ratio-zero": ("width", {"--ratio": "0"}, "width ratio must be a positive number"),
    "ratio-inf": ("width", {"--ratio": "inf"}, "width ratio must be a positive number"),
    # Export K and S_start.
    "k-at-max": ("export", {"--k": "2"}, None),  # auto plan: blocks 1 and 2 are prunable
    "k-beyond": ("export", {"--k": "99"}, "k must be between 0 and"),
    # Files of the wrong kind.
    "calibration-parquet-is-text": ("analyze", {"--calibration": "{root}/text.parquet"},
                                    "is not a readable Parquet file"),
    "calibration-npy-is-text": ("analyze", {"--calibration": "{root}/text.npy"},
                                "is not a readable .npy array"),
    "calibration-jsonl-is-binary": ("analyze", {"--calibration": "{root}/binary.jsonl"},
                                    "binary"),
    "calibration-symlink-loop": ("analyze", {"--calibration": "{root}/loop1.txt"},
                                 "symlink loop"),
    "calibration-symlink-loop-export": ("export", {"--calibration": "{root}/loop1.txt"},
                                        "symlink loop"),
    "calibration-fifo": ("analyze", {"--calibration": "{root}/fifo.txt"},
                         "not a regular file"),
    "model-weights-are-text": ("analyze", {"--model": "{root}/text-weights"},
                               "corrupt or truncated"),
    "model-weights-are-text-export": ("export", {"--model": "{root}/text-weights"},
                                      "corrupt or truncated"),
    "out-under-a-file": ("analyze", {"--out": "{root}/a-file/p.json"}, "a-file is a file"),
    "export-out-under-a-file": ("export", {"--out": "{root}/a-file/x"}, "a-file is a file"),
    "export-overwrite-not-an-export": ("export", {"--out": "{root}/mine", "--overwrite": None},
                                       "holds no export of this tool"),
    "export-out-dot": ("export", {"--out": ".", "--overwrite": None},
                       "is the current folder"),
}

SUBPROCESS = ["T-beyond-positions", "ratio-keeps-all", "calibration-symlink-loop",
              "export-overwrite-not-an-export"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("boundaries")
    (root / "text.parquet").write_text("the law of the court " * 50)
    (root / "text.npy").write_text("the law of the court " * 50)
    (root / "binary.jsonl").write_bytes(bytes(range(256)) * 8)
    os.symlink(root / "loop2.txt", root / "loop1.txt")
    os.symlink(root / "loop1.txt", root / "loop2.txt")
    os.mkfifo(root / "fifo.txt")
    weights = copy_folder(tiny_llama_dir, root / "text-weights")
    (weights / "model.safetensors").write_text("these are not weights")
    (root / "a-file").write_text("not a folder")
    (root / "mine").mkdir()
    (root / "mine" / "thesis.tex").write_text("years of work")
    (root / "here").mkdir()
    (root / "here" / "notes.txt").write_text("mine")
    return root


def argv_of(case: str, model: Path, root: Path, out: Path) -> list[str]:
    command, options, _ = CASES[case]
    base = dict(WIDTH_BASE if command == "width" else BASE)
    base["--model"] = str(model)
    base["--out"] = str(out)
    if command == "export":
        base["--k"] = "1"
    if command == "width":
        base["--ratio"] = "1"
    base.update(options)
    args = [command]
    for key, value in base.items():
        args += [key] if value is None else [key, value.format(root=root)]
    return args


def _out(tmp_path: Path, case: str) -> Path:
    return tmp_path / ("out" if CASES[case][0] != "analyze" else "out.json")


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_boundary_in_process(case, root, tiny_llama_dir, tmp_path, isolated_cache, capsys,
                                  monkeypatch):
    # Guards: at a boundary the command runs and writes its output; beyond it, or given a
    # file of the wrong kind, it answers one line and exit 2 and writes nothing.
    monkeypatch.chdir(root / "here")  # `--out .` is this folder, and must stay as it is
    out = _out(tmp_path, case)
    rc = cli.main(["--quiet", *argv_of(case, tiny_llama_dir, root, out)])
    captured = capsys.readouterr()
    needle = CASES[case][2]
    if needle is None:
        assert rc == 0, captured.err
        assert out.exists()
        return
    assert_user_error(subprocess.CompletedProcess([], rc, captured.out, captured.err), needle)
    assert not out.exists()
    assert [p.name for p in (root / "mine").iterdir()] == ["thesis.tex"]
    assert [p.name for p in (root / "here").iterdir()] == ["notes.txt"]
    assert (root / "a-file").read_text() == "not a folder"
    assert not [p for p in tmp_path.iterdir() if p.name != "cache"]  # no temporary leftovers


@pytest.fixture(scope="module")
def subprocess_runs(root, tiny_llama_dir, tmp_path_factory):
    outs = tmp_path_factory.mktemp("boundary-outs")
    return outs, run_many({case: (argv_of(case, tiny_llama_dir, root, _out(outs / case, case)),
                                  outs / f"{case}-cache") for case in SUBPROCESS})


@pytest.mark.parametrize("case", SUBPROCESS)
def test_boundaries_in_a_real_process(case, subprocess_runs):
    # Guards: the same contract in `python -m entrodrop.cli`, where library warnings or
    # import-time noise would also reach stderr.
    outs, runs = subprocess_runs
    assert_user_error(runs[case], CASES[case][2])
    assert not _out(outs / case, case).exists()
