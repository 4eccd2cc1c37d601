"""Bad input: each case is answered by a specific message.

The CLI contract is one line on stderr, exit code 2, no traceback. Every case goes through
`entrodrop.cli.main` in-process (cheap); one case of each kind also runs as a real
`python -m entrodrop.cli` subprocess. Those start together, since their start-up (importing
torch) costs seconds each, and then each case is checked on its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from analysis.calibration import CalibrationError, load_calibration
from analysis.settings import CalibrationSettings
from entrodrop import cli
from tests.reliability.support import (
    REPO,
    SMALL,
    assert_user_error,
    cli_env,
    copy_folder,
    pickle_bin_folder,
    remote_code_folder,
    run_many,
    tiny_gguf,
    truncated_safetensors,
    unsupported_family,
)
from tests.tiny_models import tiny_tokenizer

SHORT_TEXT = "the law of the court shall"


def _in_a_read_only_folder(root: Path) -> Path:
    """A target inside an existing folder that this process cannot create anything in.
    Root ignores permission bits (chmod would not stop it), so as root the folder is /proc,
    where nobody can create files; permission checks such as os.access say yes there."""
    if os.geteuid() == 0:
        return Path("/proc/entrodrop-reliability-out")
    locked = root / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "out"


# case -> (needles that the one stderr line must contain)
NEEDLES = {
    # Model specs.
    "model-missing": ["does not exist"],
    "model-hub-offline": ["not available offline"],
    "model-truncated-safetensors": ["corrupt or truncated", ".safetensors"],
    "model-garbage-gguf": ["cannot read GGUF file", "corrupt"],
    "model-truncated-gguf": ["cannot read GGUF file", "truncated"],
    "model-unsupported-family": ["unsupported architecture", "bloom"],
    "model-needs-remote-code": ["trust_remote_code", "was not run"],
    "model-code-in-pickle": ["refused", "safetensors"],
    # Calibration files.
    "calibration-empty": ["empty (0 bytes)"],
    "calibration-binary": ["binary"],
    "calibration-latin1": ["not UTF-8", "byte 0xe9"],
    "calibration-no-text-column": ["no text column", "text_column"],
    "calibration-too-few-tokens": ["too little text", "N x T = 4 x 16 = 64"],
    "calibration-symlink-loop": ["cannot read calibration file", "loop1.txt",
                                 "it is a symlink loop"],
    "calibration-parquet-is-text": ["is not a readable Parquet file", "text.parquet"],
    "calibration-npy-is-text": ["is not a readable .npy array", "text.npy"],
    "model-safetensors-is-text": ["corrupt or truncated", "text-weights"],
    "model-config-is-a-symlink-loop": ["has no config.json", "config-loop"],
    "model-folder-is-a-symlink-loop": ["cannot read model path", "model-loop1",
                                       "it is a symlink loop"],
    # --out files of analyze and evaluate: checked before any work.
    "analyze-out-under-a-file": ["cannot write --out", "a-file is a file"],
    "analyze-out-not-writable": ["cannot write --out"],
    "analyze-out-is-a-folder": ["is a folder; give a file name"],
    "evaluate-out-under-a-file": ["cannot write --out", "a-file is a file"],
    # K and S_start, which need a profile first.
    "prune-list-k-too-large": ["k must be between 0 and"],
    "export-s-start-out-of-range": ["s_start must be between 0 and 3"],
    # Export targets.
    "export-target-is-file": ["is a file; choose a folder path"],
    "export-target-under-a-file": ["is a file, so no folder can be created under it"],
    "export-target-not-writable": ["cannot write in"],
    "export-target-not-empty": ["already exists and is not empty", "overwrite"],
    "width-target-not-empty": ["already exists and is not empty", "overwrite"],
}


# One case per kind of input also runs as a real subprocess (each costs seconds of start-up).
SUBPROCESS = [
    "model-truncated-safetensors",
    "model-truncated-gguf",
    "model-needs-remote-code",
    "calibration-too-few-tokens",
    "prune-list-k-too-large",
    "export-target-not-writable",
    "calibration-symlink-loop",
    "analyze-out-under-a-file",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llama_dir):
    """The bad inputs on disk, and the CLI arguments of every case."""
    root = tmp_path_factory.mktemp("bad-input")
    llama = str(tiny_llama_dir)
    marker = root / "remote-code-ran"
    pickle_marker = root / "pickle-ran"
    good = tiny_gguf(root / "good.gguf")
    (root / "truncated.gguf").write_bytes(good.read_bytes()[: good.stat().st_size // 4])
    (root / "garbage.gguf").write_bytes(b"this is not a gguf file\n" * 100)
    files = {
        "empty.txt": b"",
        "binary.txt": bytes(range(256)) * 8,
        "latin1.txt": "caf\u00e9 au lait, \u00e9t\u00e9 ".encode("latin-1") * 20,
        "nocol.jsonl": b'{"title": "the law of the court"}\n{"title": "a license"}\n',
        "short.txt": SHORT_TEXT.encode(),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "a-file").write_text("not a folder")
    (root / "text.parquet").write_text("the law of the court " * 50)
    (root / "text.npy").write_text("the law of the court " * 50)
    os.symlink(root / "loop2.txt", root / "loop1.txt")
    os.symlink(root / "loop1.txt", root / "loop2.txt")
    text_weights = copy_folder(tiny_llama_dir, root / "text-weights")
    (text_weights / "model.safetensors").write_text("these are not weights")
    config_loop = copy_folder(tiny_llama_dir, root / "config-loop")
    (config_loop / "config.json").unlink()
    os.symlink(config_loop / "config.json", config_loop / "config.json")
    os.symlink(root / "model-loop2", root / "model-loop1")
    os.symlink(root / "model-loop1", root / "model-loop2")
    (root / "ro-json").mkdir()
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("mine")

    def analyze(model=llama, cal="builtin:random"):
        return ["analyze", "--model", model, "--calibration", cal, *SMALL]

    def export(out, *extra, command="export"):
        if command == "width":
            return ["width", "--model", llama, "--calibration", "builtin:random", *SMALL[:4],
                    "--device", "cpu", "--ratio", "0.5", "--criterion", "magnitude",
                    "--out", str(out), *extra]
        return [command, "--model", llama, "--calibration", "builtin:random", *SMALL,
                "--k", "1", "--out", str(out), *extra]

    args = {
        "model-missing": analyze(model=str(root / "no" / "such" / "model")),
        "model-hub-offline": analyze(model="someorg/not-a-real-model-xyz"),
        "model-truncated-safetensors": analyze(
            model=str(truncated_safetensors(tiny_llama_dir, root / "truncated"))),
        "model-garbage-gguf": analyze(model=str(root / "garbage.gguf")),
        "model-truncated-gguf": analyze(model=str(root / "truncated.gguf")),
        "model-unsupported-family": analyze(model=str(unsupported_family(root / "bloom"))),
        "model-needs-remote-code": analyze(
            model=str(remote_code_folder(tiny_llama_dir, root / "remote", marker))),
        "model-code-in-pickle": analyze(
            model=str(pickle_bin_folder(tiny_llama_dir, root / "pickled", pickle_marker))),
        "calibration-empty": analyze(cal=str(root / "empty.txt")),
        "calibration-binary": analyze(cal=str(root / "binary.txt")),
        "calibration-latin1": analyze(cal=str(root / "latin1.txt")),
        "calibration-no-text-column": analyze(cal=str(root / "nocol.jsonl")),
        "calibration-too-few-tokens": analyze(cal=str(root / "short.txt")),
        "calibration-symlink-loop": analyze(cal=str(root / "loop1.txt")),
        "calibration-parquet-is-text": analyze(cal=str(root / "text.parquet")),
        "calibration-npy-is-text": analyze(cal=str(root / "text.npy")),
        "model-safetensors-is-text": analyze(model=str(text_weights)),
        "model-config-is-a-symlink-loop": analyze(model=str(config_loop)),
        "model-folder-is-a-symlink-loop": analyze(model=str(root / "model-loop1")),
        "analyze-out-under-a-file": [*analyze(), "--out", str(root / "a-file" / "p.json")],
        "analyze-out-not-writable": [*analyze(), "--out",
                                     str(_in_a_read_only_folder(root / "ro-json") / "p.json")],
        "analyze-out-is-a-folder": [*analyze(), "--out", str(root / "full")],
        "evaluate-out-under-a-file": ["evaluate", "--model", llama, "--calibration",
                                      "builtin:random", *SMALL, "--held-out", "2",
                                      "--out", str(root / "a-file" / "e.json")],
        "prune-list-k-too-large": ["prune-list", "--model", llama, "--calibration",
                                   "builtin:random", *SMALL, "--k", "99"],
        "export-s-start-out-of-range": export(root / "out-s-start", "--s-start", "9"),
        "export-target-is-file": export(root / "a-file"),
        "export-target-under-a-file": export(root / "a-file" / "out"),
        "export-target-not-writable": export(_in_a_read_only_folder(root)),
        "export-target-not-empty": export(root / "full"),
        "width-target-not-empty": export(root / "full", command="width"),
    }
    assert set(args) == set(NEEDLES)
    return {"root": root, "args": args, "marker": marker, "pickle_marker": pickle_marker}


@pytest.fixture(scope="module")
def subprocess_runs(world):
    """The SUBPROCESS cases, run once as real subprocesses, all started together."""
    root = world["root"]
    return run_many({name: (world["args"][name], root / "cache") for name in SUBPROCESS})


@pytest.mark.parametrize("case", sorted(NEEDLES))
def test_cli_main_answers_bad_input_with_one_specific_line(world, case, isolated_cache, capsys):
    # Guards: every user error is caught, named and explained: exit 2, one stderr line, and
    # no exception escapes main() (so no traceback).
    rc = cli.main(["--quiet", *map(str, world["args"][case])])
    captured = capsys.readouterr()
    assert_user_error(subprocess.CompletedProcess([], rc, captured.out, captured.err),
                      *NEEDLES[case])


@pytest.mark.parametrize("case", SUBPROCESS)
def test_cli_subprocess_answers_bad_input_with_one_specific_line(subprocess_runs, case):
    # Guards: the same contract for a real `python -m entrodrop.cli` process, where library
    # warnings or import-time noise would also reach stderr.
    assert_user_error(subprocess_runs[case], *NEEDLES[case])


def test_untrusted_code_never_ran_and_nothing_was_written(world, subprocess_runs):
    # Guards: refusing remote code / code-bearing pickles happens before they are executed,
    # and the refused export targets are left exactly as they were.
    assert not world["marker"].exists()
    assert not world["pickle_marker"].exists()
    root = world["root"]
    assert (root / "a-file").read_text() == "not a folder"
    assert sorted(p.name for p in (root / "full").iterdir()) == ["keep.txt"]
    assert not (root / "out-s-start").exists()
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_too_few_tokens_message_says_how_many_the_file_has(subprocess_runs):
    # Guards: the message gives the file's real token count, not just "too short".
    line = assert_user_error(subprocess_runs["calibration-too-few-tokens"])
    have = len(tiny_tokenizer()(SHORT_TEXT)["input_ids"])
    assert re.search(rf"\b{have} tokens in all\b", line), line


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("text\n".encode("utf-16"), "UTF-16"),
        (b"title,body_len\nthe law,3\n", "no text column"),
    ],
    ids=["utf16-txt", "csv-without-text-column"],
)
def test_more_calibration_files_are_refused_by_the_library(tmp_path, data, needle):
    # Guards: the other encodings and tabular layouts get the same specific errors.
    path = tmp_path / ("cal.csv" if needle == "no text column" else "cal.txt")
    path.write_bytes(data)
    with pytest.raises(CalibrationError, match=needle):
        load_calibration(CalibrationSettings(str(path), 4, 16), tiny_tokenizer())


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["analyze", "--samples", "0"], "samples (N) must be between 1 and", id="N"),
        pytest.param(["analyze", "--seqlen", "1"], "seqlen (T) must be between 2 and", id="T"),
        pytest.param(["analyze", "--bins", "1"], "bins must be between 2 and", id="bins"),
        pytest.param(["analyze", "--knn-k", "0"], "knn_k must be between 1 and", id="k"),
        pytest.param(["analyze", "--knn-k", "15"], "knn_k=15 must be smaller than", id="k-vs-T"),
        pytest.param(["analyze", "--renyi-alpha", "1"], "renyi_alpha must be > 0", id="alpha-1"),
        pytest.param(["analyze", "--renyi-alpha", "-2"], "renyi_alpha must be > 0", id="alpha<0"),
        pytest.param(["prune-list", "--k", "-1"], "k must be between 0 and", id="K-prune-list"),
        pytest.param(["prune-list", "--s-start", "-1"], "s_start must be between 0 and",
                     id="S_start-prune-list"),
        pytest.param(["export", "--k", "4", "--out", "{tmp}/out"], "k must be between 0 and",
                     id="K-export"),
        pytest.param(["export", "--s-start", "4", "--out", "{tmp}/out"],
                     "s_start must be between 0 and", id="S_start-export"),
    ],
)
def test_out_of_range_settings_in_process(tiny_llama_dir, isolated_cache, tmp_path, capsys,
                                          argv, needle):
    # Guards: N, T, bins, k, alpha, K and S_start are range-checked with a named message.
    # (tests/entrodrop/cli/test_common.py runs N, T, bins, k and alpha as subprocesses too.)
    base = {"--model": str(tiny_llama_dir), "--calibration": "builtin:random", "--samples": "4",
            "--seqlen": "16", "--bins": "8", "--knn-k": "3", "--renyi-alpha": "2",
            "--device": "cpu"}
    command, *rest = [a.format(tmp=tmp_path) for a in argv]
    base.update(zip(rest[::2], rest[1::2], strict=True))
    rc = cli.main(["--quiet", command, *[x for kv in base.items() for x in kv]])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_too_little_disk_space_is_refused_before_writing(tiny_llama_dir, isolated_cache,
                                                         tmp_path, monkeypatch, capsys):
    # Guards: the free-space check runs before any byte of the export is written, for the
    # library call and for the CLI.
    from analysis.models import load_model
    from analysis.settings import ModelSettings
    from pruning.export import InsufficientDiskSpaceError, export_pruned

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(2**30, 2**30 - 4096, 4096))
    loaded = load_model(ModelSettings(str(tiny_llama_dir), device="cpu"))
    with pytest.raises(InsufficientDiskSpaceError, match=r"needs about \d+ MiB but only 1 MiB are free"):
        export_pruned(loaded.model, loaded.tokenizer, tmp_path / "lib", granularity="layer",
                      blocks=[1], manifest={})
    capsys.readouterr()  # the library's own progress bars, before the CLI silences them
    rc = cli.main(["--quiet", "export", "--model", str(tiny_llama_dir), "--calibration",
                   "builtin:random", *SMALL, "--k", "1", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "free some space" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # nothing else written


def test_gguf_conversion_is_refused_when_the_disk_is_too_full(isolated_cache, tmp_path,
                                                              monkeypatch):
    # Guards: converting a GGUF file checks the free space before writing; the library
    # raises a clear error, the CLI (a real process, its disk faked as full) answers with one
    # line, and neither leaves a half-written model or a temporary folder behind.
    from analysis.models import ModelLoadError, load_model
    from analysis.settings import ModelSettings

    gguf_file = tiny_gguf(tmp_path / "tiny.gguf")
    with monkeypatch.context() as m:
        usage = namedtuple("usage", "total used free")
        m.setattr("shutil.disk_usage", lambda path: usage(2**30, 2**30 - 4096, 4096))
        with pytest.raises(ModelLoadError, match=r"not enough free disk space to convert "
                                                 r"tiny\.gguf: it needs about \d+ MiB .* and "
                                                 r"0 MiB are free"):
            load_model(ModelSettings(str(gguf_file), device="cpu"))
    full_disk = ("import collections, shutil, sys\n"
                 "u = collections.namedtuple('usage', 'total used free')\n"
                 "shutil.disk_usage = lambda path: u(2**30, 2**30 - 4096, 4096)\n"
                 "from entrodrop.cli import main\n"
                 "sys.exit(main(sys.argv[1:]))\n")
    args = ["--quiet", "analyze", "--model", str(gguf_file), "--calibration", "builtin:random",
            *SMALL, "--out", str(tmp_path / "out.json")]
    result = subprocess.run([sys.executable, "-c", full_disk, *args], capture_output=True,
                            text=True, cwd=REPO, env=cli_env(isolated_cache), timeout=300)
    assert_user_error(result, "not enough free disk space", "ENTRODROP_CACHE_DIR")
    models = isolated_cache / "models"
    assert not models.exists() or not [p for p in models.iterdir() if p.name != "_gguf"]
    assert not (tmp_path / "out.json").exists()


def test_nonfinite_hidden_states_are_flagged_by_the_library(overflow_dir, isolated_cache):
    # Guards: fp16 overflow does not give silent NaN (or silent zeros): the blocks are
    # listed, their scores are null, a warning suggests bf16/fp32, and ranking still works.
    from analysis.settings import AnalysisRequest, EstimatorSettings, ModelSettings
    from entrodrop import service

    def profile(dtype):
        request = AnalysisRequest(
            ModelSettings(str(overflow_dir), device="cpu", dtype=dtype),
            (CalibrationSettings("builtin:random", 4, 16, 1),),
            EstimatorSettings(bins=8, knn_k=3, renyi_alpha=2.0), use_cache=False)
        return service.analyze(request)

    clean = profile("float32").runs[0]
    assert clean.nonfinite_blocks == {"layer": [], "attn": []} and clean.warnings == []

    result = profile("float16")
    p = result.runs[0]
    # The MLP of layer 1 overflows: Z_2 onwards is inf/NaN, so layer blocks 1-3 and the
    # attention blocks 2-3 (which read Z_2, Z_3) are affected; blocks before are not.
    assert p.nonfinite_blocks == {"layer": [1, 2, 3], "attn": [2, 3]}
    assert any("bfloat16 or float32" in w for w in p.warnings)
    assert any("bfloat16 or float32" in m for m in result.messages)
    for est in ("bucket", "knn", "renyi"):
        dh = p.blocks["layer"].delta_h[est]
        assert dh[1:] == [None, None, None] and isinstance(dh[0], float)
        assert p.blocks["attn"].delta_h[est][2:] == [None, None]
        assert p.entropy_curve[est][2:] == [None, None, None]
        assert isinstance(p.s_start[est], int)
    json.dumps(p.to_json(), allow_nan=False)  # no NaN leaks into the JSON
    plan = service.stage_plan(p, policy="auto")
    order = list(service.decision(p, "layer", "knn", 1, plan).order)
    flagged = [b for b in order if b in p.nonfinite_blocks["layer"]]
    assert order[len(order) - len(flagged):] == flagged  # unknown scores go last


def test_nonfinite_warning_reaches_the_cli(overflow_dir, tmp_path):
    # Guards: the CLI prints the overflow warning on stderr and keeps the flags in its JSON.
    from tests.reliability.support import run_cli

    out = tmp_path / "profile.json"
    r = run_cli(["analyze", "--model", overflow_dir, "--calibration", "builtin:random", *SMALL,
                 "--dtype", "float16", "--out", out], tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "non-finite hidden states" in r.stderr and "bfloat16 or float32" in r.stderr
    data = json.loads(out.read_text())
    assert data["nonfinite_blocks"]["layer"] == [1, 2, 3]


@pytest.fixture(scope="module")
def overflow_dir(tmp_path_factory):
    from tests.reliability.support import overflow_folder

    return overflow_folder(tmp_path_factory.mktemp("overflow"))


# --------------------------------------------------------------------------- against the model

_BASE = {"--calibration": "builtin:random", "--samples": "4", "--seqlen": "16", "--bins": "8",
         "--knn-k": "3", "--renyi-alpha": "2", "--device": "cpu"}
_WIDTH_BASE = {"--calibration": "builtin:random", "--samples": "4", "--seqlen": "16",
               "--device": "cpu", "--criterion": "magnitude", "--out": "{tmp}/out"}


@pytest.mark.parametrize(
    ("family", "argv", "needle"),
    [
        pytest.param("llama", ["analyze", "--seqlen", "257"],
                     "seqlen (T) = 257 is longer than the 256 positions", id="T-rope"),
        pytest.param("gpt2", ["analyze", "--seqlen", "257"],
                     "seqlen (T) = 257 is longer than the 256 positions", id="T-learned"),
        pytest.param("llama", ["analyze", "--renyi-alpha", "1.0000001"],
                     "within 0.001 of 1", id="alpha-near-1"),
        pytest.param("llama", ["analyze", "--seed", str(2**63)],
                     "seed must be between 0 and 9223372036854775807", id="seed-int64"),
        pytest.param("llama", ["analyze", "--samples", "100000", "--seqlen", "131072"],
                     "N x T = 100000 x 131072", id="NxT-int32"),
        pytest.param("llama", ["evaluate", "--seqlen", "257"],
                     "seqlen (T) = 257 is longer", id="T-evaluate"),
        pytest.param("llama", ["evaluate", "--width-ratios", "1e9,0.5"],
                     "width ratio 1e+09 keeps all 64 MLP neurons", id="ratio-list-evaluate"),
        pytest.param("llama", ["evaluate", "--width-ratios", "0.5,1.5", "--width-mode", "uniform"],
                     "width ratio 1.5 keeps every neuron in mode 'uniform'", id="ratio-uniform"),
        pytest.param("llama", ["width", "--ratio", "1", "--mode", "uniform"],
                     "width ratio 1 keeps every neuron in mode 'uniform'", id="ratio-width-uniform"),
        pytest.param("llama", ["width", "--ratio", "1e9"],
                     "width ratio 1e+09 keeps all 64 MLP neurons", id="ratio-width"),
        pytest.param("llama", ["width", "--ratio", "2"],  # round(2 x 32) = 64 = I
                     "width ratio 2 keeps all 64 MLP neurons", id="ratio-width-I/D"),
        pytest.param("gpt2", ["width", "--seqlen", "300", "--ratio", "0.5"],
                     "seqlen (T) = 300 is longer", id="T-width"),
    ],
)
def test_settings_are_checked_against_the_model_before_it_loads(
        tiny_llama_dir, tmp_path_factory, isolated_cache, tmp_path, capsys, monkeypatch,
        family, argv, needle):
    # Guards: T beyond the model's positions (IndexError in a learned position table),
    # alpha next to 1 (every block scored 0.0), seeds and N x T that overflow, and width
    # ratios that keep every neuron (an unpruned copy exported as pruned) are refused with
    # one line, from the config alone: no weight is loaded, nothing is written.
    folder = tiny_llama_dir if family == "llama" else _tiny_dir(tmp_path_factory, family)

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    for where in ("analysis.models", "entrodrop.service.models", "entrodrop.service.analysis"):
        monkeypatch.setattr(f"{where}.load_model", no_load)
    command, *rest = argv
    base = dict(_WIDTH_BASE if command == "width" else _BASE)
    base.update(zip(rest[::2], rest[1::2], strict=True))
    flat = [x.format(tmp=tmp_path) for kv in base.items() for x in kv]
    rc = cli.main(["--quiet", command, "--model", str(folder), *flat])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


_TINY_DIRS: dict[str, Path] = {}


def _tiny_dir(factory, family: str) -> Path:
    from tests.tiny_models import save_tiny

    if family not in _TINY_DIRS:
        _TINY_DIRS[family] = save_tiny(family, factory.mktemp(f"tiny-{family}"))
    return _TINY_DIRS[family]


def test_a_batch_too_large_for_the_free_memory_is_refused_before_loading(
        tiny_llama_dir, isolated_cache, tmp_path, capsys, monkeypatch):
    # Guards: the activations of one batch are estimated from the config and compared with
    # the free memory before the model loads (T=80,000 failed in the allocator, minutes in,
    # with a message that was not recognised as out of memory).
    from entrodrop.service.validate import activation_bytes, model_shape

    shape = model_shape(str(tiny_llama_dir))
    need = activation_bytes(shape, 4, 16)
    monkeypatch.setattr("analysis.streaming.memory.free_bytes", lambda device: need - 1)
    rc = cli.main(["--quiet", "analyze", "--model", str(tiny_llama_dir), *SMALL,
                   "--calibration", "builtin:random", "--batch-size", "4"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1, err
    assert "one batch of 4 window(s) of 16 tokens needs about" in err[0]
    assert "lower the batch size, N (samples) or T (seqlen)" in err[0]
    assert not isolated_cache.joinpath("profiles").exists()  # nothing ran
    monkeypatch.setattr("analysis.streaming.memory.free_bytes", lambda device: need)
    assert cli.main(["--quiet", "analyze", "--model", str(tiny_llama_dir), *SMALL,
                     "--calibration", "builtin:random", "--batch-size", "4",
                     "--out", str(tmp_path / "p.json")]) == 0, capsys.readouterr().err


def test_the_service_refuses_a_width_export_that_prunes_nothing(tiny_llama_dir, tmp_path):
    # Guards: the dashboard's export path (a model in memory) refuses the ratio too.
    from analysis.settings import ModelSettings, SettingsError
    from entrodrop import service

    loaded = service.load(ModelSettings(str(tiny_llama_dir), device="cpu"))
    cal = CalibrationSettings("builtin:random", 4, 16)
    scores = service.width_scores(loaded, cal, ["magnitude"])["magnitude"]
    with pytest.raises(SettingsError, match="keeps all 64 MLP neurons"):
        service.export_width(loaded, scores, cal, "magnitude", 2.0, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert service.export_width(loaded, scores, cal, "magnitude", 1.98, tmp_path / "ok").is_dir()


@pytest.mark.parametrize(("name", "stored"), [("....txt", "upload.txt"), (".jsonl", None),
                                              ("notes.TXT", "notes.TXT"),
                                              ("../../etc/cal.csv", "cal.csv")])
def test_an_upload_keeps_its_file_type(tmp_path, name, stored):
    # Guards: an upload named "....txt" was stored as "txt" (leading dots stripped), a file
    # with no extension that no calibration reader would take.
    from app.logic.inputs import UploadError, save_upload

    if stored is None:  # ".jsonl" is a hidden file without a type, refused as before
        with pytest.raises(UploadError):
            save_upload(name, b"the law", max_bytes=1000, folder=tmp_path)
        return
    path = save_upload(name, b"the law of the court", max_bytes=1000, folder=tmp_path)
    assert path.name == stored and path.parent.parent == tmp_path
