"""What every command shares (entrodrop.cli.common): options, defaults, and the error contract
(user error: one line, exit 2; internal error: one line naming a log file, exit 1)."""

import argparse
import ast
import sys
from pathlib import Path

import pytest

import entrodrop.cli
from analysis import settings
from analysis.errors import EntroDropError
from entrodrop.cli import build_parser, common, main
from tests.entrodrop.cli.support import run_cli


def test_help_lists_commands(tmp_path):
    out = run_cli(["--help"], tmp_path)
    assert out.returncode == 0
    for cmd in ("analyze", "prune-list", "export", "evaluate", "width"):
        assert cmd in out.stdout


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


# --------------------------------------------------------------------------- in process

ANALYZE = ["--quiet", "analyze", "--model", "some/model", "--device", "cpu"]


def _stderr_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def _broken_service(monkeypatch, error: BaseException) -> None:
    def analyze(*args, **kwargs):
        raise error

    monkeypatch.setattr("entrodrop.service.analyze", analyze)


def test_internal_error_is_one_line_and_the_traceback_goes_to_a_log(isolated_cache, monkeypatch,
                                                                    capsys):
    # Guards: a bug is not dressed up as a user error (exit 1, not 2), prints no traceback,
    # and the line names a log file that holds the full traceback.
    _broken_service(monkeypatch, KeyError("runs"))
    assert main(ANALYZE) == 1
    lines = _stderr_lines(capsys)
    assert len(lines) == 1, lines
    prefix = "entrodrop analyze: internal error: KeyError: 'runs'; the full traceback is in "
    assert lines[0].startswith(prefix), lines[0]
    log = Path(lines[0][len(prefix):])
    assert log.parent == isolated_cache / "logs" and log.name.startswith("cli-")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'runs'" in text
    assert "in cmd_analyze" in text  # the frames, not just the message
    assert "analyze --model some/model" in text.splitlines()[0]  # what was run
    assert [p.name for p in log.parent.iterdir()] == [log.name]  # atomic: no temporary left


def test_internal_error_without_a_message_or_a_log_is_still_one_line(isolated_cache,
                                                                     monkeypatch, capsys):
    _broken_service(monkeypatch, AssertionError())

    def no_log(*_):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(common, "save_traceback", no_log)
    assert main(ANALYZE) == 1
    lines = _stderr_lines(capsys)
    assert lines == ["entrodrop analyze: internal error: AssertionError; the traceback could "
                     "not be saved (read-only file system)"]


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (EntroDropError("bad  setting,\nsee docs"), 2, "entrodrop analyze: error: bad setting, see docs"),
        (FileNotFoundError("no such file: x.txt"), 2, "entrodrop analyze: error: no such file: x.txt"),
        (MemoryError(), 2, "entrodrop analyze: error: out of memory; use a smaller --batch-size "
                           "or --samples"),
        (RuntimeError("MPS backend out of memory"), 2, "entrodrop analyze: error: out of memory; "
                                                       "use a smaller --batch-size or --samples"),
        (KeyboardInterrupt(), 130, "entrodrop analyze: interrupted"),
    ],
    ids=["user-error", "os-error", "host-oom", "mps-oom", "interrupt"],
)
def test_user_errors_memory_and_interrupts(isolated_cache, monkeypatch, capsys, error, code, line):
    _broken_service(monkeypatch, error)
    assert main(ANALYZE) == code
    assert _stderr_lines(capsys) == [line]
    assert not (isolated_cache / "logs").exists()  # not a bug: nothing logged


def test_cli_error_is_a_user_error_found_before_any_work(monkeypatch, capsys):
    # Guards: CLIError is an EntroDropError; a malformed --ks is refused before the model loads.
    assert issubclass(common.CLIError, EntroDropError)

    def no_loading(*_args, **_kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr("entrodrop.service.load", no_loading)
    assert main(["--quiet", "evaluate", "--ks", "1-4"]) == 2
    assert _stderr_lines(capsys) == [
        "entrodrop evaluate: error: --ks must look like 0..8 or 0,2,4; got '1-4'"]


def test_defaults_are_the_settings_defaults():
    a = build_parser().parse_args(["analyze"])
    assert (a.model, a.seed, a.bins, a.knn_k, a.renyi_alpha, a.skip_first, a.batch_size) == (
        settings.DEFAULT_MODEL, settings.DEFAULT_SEED, settings.DEFAULT_BINS,
        settings.DEFAULT_KNN_K, settings.DEFAULT_RENYI_ALPHA, settings.DEFAULT_SKIP_FIRST,
        settings.DEFAULT_BATCH_SIZE)
    assert (a.device, a.dtype) == (settings.ModelSettings().device, settings.ModelSettings().dtype)
    p = build_parser().parse_args(["prune-list"])
    assert p.calibration == settings.DEFAULT_CALIBRATION
    assert p.k == common.DEFAULT_K and p.knn_k == settings.DEFAULT_KNN_K  # two different k


def test_held_out_flag_and_its_old_spelling():
    parser = build_parser()
    assert parser.parse_args(["evaluate"]).held_out == 16
    assert parser.parse_args(["evaluate", "--held-out", "3"]).held_out == 3
    assert parser.parse_args(["evaluate", "--heldout", "2"]).held_out == 2  # old scripts
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = sub.choices["evaluate"].format_help()
    assert "--held-out" in help_text and "--heldout" not in help_text


def test_common_imports_no_command_module():
    # Guards: no import cycle; the command modules import common, never the other way.
    tree = ast.parse(Path(common.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("entrodrop.cli")}, imported


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch):
    # Guards: a broken command module stops the CLI; it never silently loses commands.
    monkeypatch.delattr(entrodrop.cli, "width")
    monkeypatch.setitem(sys.modules, "entrodrop.cli.width", None)
    with pytest.raises(ImportError):
        build_parser()
