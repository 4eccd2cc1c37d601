"""Faults: processes killed part-way, corrupted cache entries, running out of memory.

The kills are real: the CLI runs as a subprocess under `pause_driver`, which stops it at a
chosen line (mid-conversion, mid-capture, mid-export); the test waits for that point and
sends SIGKILL, so no `finally` block or handler gets to tidy up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.convert import COMPLETE_MARKER, ConvertedModelChanged, conversion_problem
from analysis.identity import file_identity
from analysis.models import load_model
from analysis.profile import SCHEMA_VERSION, ProfileCache
from analysis.settings import AnalysisRequest, CalibrationSettings, EstimatorSettings, ModelSettings
from entrodrop import cli, service
from pruning.export import MANIFEST_NAME
from tests.reliability.support import (
    SMALL,
    overwrite_tensor,
    padded_folder,
    run_many,
    sigkill,
    start_paused_cli,
    tiny_gguf,
    wait_for_flag,
)
from tests.tiny_models import tiny_ids, tiny_model

ANALYZE_SMALL = ["--samples", "8", *SMALL[2:], "--batch-size", "4"]  # 8 windows, 2 batches


def _temp_dirs(folder):
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.is_dir())


def test_killed_gguf_conversion_is_never_taken_as_valid(tmp_path, monkeypatch):
    # Guards: conversion writes into a temporary folder and renames it into place only when
    # complete (with its marker), so a kill leaves no folder that looks converted; the next
    # load converts again and clears the dead process's temporary folder.
    gguf = tiny_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"
    flag = tmp_path / "paused"
    # Stop right after the weights are written into the temporary folder.
    proc = start_paused_cli(["analyze", "--model", gguf, "--calibration", "builtin:random",
                             *SMALL], cache, at="transformers:PreTrainedModel.save_pretrained",
                            nth=1, when="after", flag=flag)
    wait_for_flag(proc, flag)
    sigkill(proc)

    models = cache / "models"
    leftovers = _temp_dirs(models)
    assert len(leftovers) == 1 and f".{proc.pid}." in leftovers[0].name
    assert (leftovers[0] / "model.safetensors").is_file()  # killed mid-conversion indeed
    converted = [p for p in models.iterdir() if not p.name.startswith(".")]
    source = file_identity(gguf, index_dir=tmp_path / "index")
    assert all(conversion_problem(p, source) is not None for p in converted)
    assert not (cache / "profiles").exists() or not list((cache / "profiles").glob("*.json"))

    monkeypatch.setenv("ENTRODROP_CACHE_DIR", str(cache))
    loaded = load_model(ModelSettings(str(gguf), device="cpu"))
    assert Path(loaded.source_path).parent == models
    assert conversion_problem(Path(loaded.source_path), source) is None
    assert _temp_dirs(models) == []  # the dead process's folder was removed
    ids = tiny_ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, tiny_model("llama")(ids).logits,
                                   rtol=0, atol=1e-5)


def test_killed_analysis_leaves_no_cache_entry(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    # Guards: a profile is cached only once it is complete (atomic write after the capture),
    # so a run killed mid-capture leaves nothing that a later run would take as a result.
    cache = tmp_path / "cache"
    flag = tmp_path / "paused"
    args = ["analyze", "--model", tiny_llama_dir, "--calibration", "builtin:random",
            *ANALYZE_SMALL]
    # The 5th layer output is layer 0 of the second batch: half-way through the capture.
    proc = start_paused_cli(args, cache, at="analysis.capture:BlockStats.layer_output",
                            nth=5, when="before", flag=flag)
    wait_for_flag(proc, flag)
    sigkill(proc)
    profiles = cache / "profiles"
    assert not profiles.exists() or list(profiles.iterdir()) == []

    monkeypatch.setenv("ENTRODROP_CACHE_DIR", str(cache))
    assert cli.main(["--quiet", *map(str, args), "--out", str(tmp_path / "p.json")]) == 0
    assert "loaded from cache" not in capsys.readouterr().err  # recomputed
    entries = list(profiles.glob("*.json"))
    assert len(entries) == 1
    assert ProfileCache(profiles).get(entries[0].stem) is not None


@pytest.mark.parametrize("previous", [False, True], ids=["new-target", "overwrite"])
def test_killed_export_leaves_the_target_as_it_was(tiny_llama_dir, tmp_path, monkeypatch,
                                                   capsys, previous):
    # Guards: an export is staged in a temporary folder and renamed into place when
    # complete, so a kill mid-write leaves no target (or the previous export, intact); the
    # next export to that target removes the dead process's temporary folder.
    cache = tmp_path / "cache"
    out = tmp_path / "exports" / "pruned"
    base = ["export", "--model", str(tiny_llama_dir), "--calibration", "builtin:random",
            *SMALL, "--out", str(out)]
    monkeypatch.setenv("ENTRODROP_CACHE_DIR", str(cache))
    if previous:
        assert cli.main(["--quiet", *base, "--granularity", "layer", "--k", "1"]) == 0
        before = {p.name: p.read_bytes() for p in out.iterdir()}

    flag = tmp_path / "paused"
    killed_args = [*base, "--granularity", "attn", "--k", "2", "--overwrite"]
    # Stop right after the weights are written into the temporary folder.
    proc = start_paused_cli(killed_args, cache, at="pruning.export:save_clean_checkpoint",
                            nth=1, when="after", flag=flag)
    wait_for_flag(proc, flag)
    sigkill(proc)

    if previous:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    else:
        assert not out.exists()
    leftovers = _temp_dirs(out.parent)
    assert len(leftovers) == 1 and f".{proc.pid}." in leftovers[0].name
    assert (leftovers[0] / "model.safetensors").is_file()  # killed mid-write indeed

    capsys.readouterr()
    assert cli.main(["--quiet", *map(str, killed_args)]) == 0, capsys.readouterr().err
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["granularity"] == "attn" and len(manifest["blocks"]) == 2
    assert _temp_dirs(out.parent) == []


def test_corrupt_cache_entries_are_reported_by_the_cli_and_recomputed(tiny_llama_dir, tmp_path,
                                                                     monkeypatch):
    # Guards: a damaged cache entry is caught by its schema version or checksum, named on
    # stderr and recomputed, never served (the library side is in tests/entrodrop).
    damages = {"truncate": "is unreadable", "edit": "fails its checksum",
               "old_schema": f"has schema 0, expected {SCHEMA_VERSION}"}
    runs, caches = {}, {}
    for damage in damages:
        cache = caches[damage] = tmp_path / damage
        args = ["analyze", "--model", tiny_llama_dir, "--calibration", "builtin:random", *SMALL]
        monkeypatch.setenv("ENTRODROP_CACHE_DIR", str(cache))
        first = tmp_path / f"{damage}-first.json"
        assert cli.main(["--quiet", *map(str, args), "--out", str(first)]) == 0
        entry = next((cache / "profiles").glob("*.json"))
        text = entry.read_text()
        data = json.loads(text)
        if damage == "truncate":
            entry.write_text(text[: len(text) // 2])
        elif damage == "edit":  # a plausible hand edit: one score changed
            data["payload"]["blocks"]["attn"]["cosine"][1] = 0.0
            entry.write_text(json.dumps(data, sort_keys=True))
        else:
            data["schema_version"] = 0
            entry.write_text(json.dumps(data, sort_keys=True))
        runs[damage] = ([*args, "--out", tmp_path / f"{damage}-second.json"], cache)

    results = run_many(runs, quiet=False)  # --quiet would hide what the cache did
    for damage, needle in damages.items():
        again = results[damage]
        assert again.returncode == 0, again.stderr[-3000:]
        assert needle in again.stderr and "recomputing" in again.stderr, again.stderr
        assert "loaded from cache" not in again.stderr
        first = json.loads((tmp_path / f"{damage}-first.json").read_text())
        second = json.loads((tmp_path / f"{damage}-second.json").read_text())
        assert second["blocks"] == first["blocks"]
        entry = next((caches[damage] / "profiles").glob("*.json"))
        assert ProfileCache(entry.parent).get(entry.stem).to_json() == second["runs"][0]  # rewritten


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        torch.OutOfMemoryError(""),
        RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)"),
        MemoryError(),
    ],
    ids=["cuda", "cuda-no-text", "mps", "host"],
)
@pytest.mark.parametrize("command", ["analyze", "width"])
def test_out_of_memory_suggests_a_smaller_batch(tiny_llama_dir, isolated_cache, monkeypatch,
                                                capsys, tmp_path, error, command):
    # Guards: an allocation failure mid-run is a user-facing error (exit 2, one line) that
    # says what to change, not a traceback; nothing half-done is cached.
    import analysis.models

    real_load = analysis.models.load_model

    def load_then_fail(settings, progress=None):
        loaded = real_load(settings, progress=progress)
        layer = loaded.model.model.layers[1]

        def allocation_failure(*_):
            raise error

        layer.register_forward_hook(allocation_failure)
        return loaded

    monkeypatch.setattr("entrodrop.service.analysis.load_model", load_then_fail)
    monkeypatch.setattr("entrodrop.service.models.load_model", load_then_fail)
    monkeypatch.setattr("analysis.models.load_model", load_then_fail)
    if command == "analyze":
        argv = ["analyze", "--calibration", "builtin:random", *SMALL]
    else:
        argv = ["width", "--calibration", "builtin:random", *SMALL[:4], "--device", "cpu",
                "--ratio", "0.5", "--out", str(tmp_path / "out")]
    rc = cli.main(["--quiet", argv[0], "--model", str(tiny_llama_dir), *argv[1:]])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1, err
    assert "out of memory" in err[0] and "--batch-size" in err[0] and "--samples" in err[0]
    assert not list(isolated_cache.glob("profiles/*.json"))
    assert not (tmp_path / "out").exists()


def test_weights_edited_in_place_are_analyzed_again(tmp_path, isolated_cache, monkeypatch):
    # Guards: the profile cache key holds a full content hash of the weights. An identity
    # made of the file's size and first and last 4 MiB served the old numbers after a
    # tensor in the middle was rewritten in place (same size, mtime put back).
    monkeypatch.setattr("analysis.identity.RACY_MARGIN_NS", 0)  # the index is trusted at once
    folder = padded_folder(tmp_path / "model")
    request = AnalysisRequest(
        ModelSettings(str(folder), device="cpu"),
        (CalibrationSettings("builtin:random", samples=4, seqlen=16, seed=1),),
        EstimatorSettings(bins=8, knn_k=3, renyi_alpha=2.0, batch_size=4))
    first = service.analyze(request)
    assert service.analyze(request).from_cache == [True]

    overwrite_tensor(folder / "model.safetensors", "model.layers.1.mlp.down_proj.weight",
                     lambda w: w * 5)
    edited = service.analyze(request)
    assert edited.from_cache == [False]
    assert not any("loaded from cache" in m for m in edited.messages)
    assert edited.runs[0].model["identity"] != first.runs[0].model["identity"]
    assert edited.runs[0].blocks != first.runs[0].blocks
    assert service.analyze(request).runs[0] == edited.runs[0]  # cached under the new identity


def _inf(w):
    return np.full_like(w, np.inf)


_DAMAGE_NOTICES = {
    "truncated": "model.safetensors changed since it was converted",
    "inf": "model.safetensors changed since it was converted",
    "missing": "tokenizer.json is missing",
    "added": "model-00002-of-00002.safetensors was added since it was converted",
    "old-marker": "it was converted by another version of EntroDrop",
}


@pytest.mark.parametrize("damage", list(_DAMAGE_NOTICES))
def test_a_damaged_converted_model_is_converted_again(tmp_path, isolated_cache, monkeypatch,
                                                      damage):
    # Guards: the completion marker records each converted file's size and hash, and every
    # load checks them. A truncated file was used until now (every run failed, advising to
    # download the model again) and a tensor overwritten with inf was used silently.
    from safetensors.torch import load_file

    gguf = tiny_gguf(tmp_path / "tiny.gguf")
    settings = ModelSettings(str(gguf), device="cpu")
    folder = Path(load_model(settings).source_path)
    weights = folder / "model.safetensors"
    fresh = {k: v.clone() for k, v in load_file(weights).items()}  # not views of the file
    # Index entries trusted as soon as written: the damage must show in the stat alone.
    monkeypatch.setattr("analysis.identity.RACY_MARGIN_NS", 0)
    assert conversion_problem(folder, file_identity(gguf)) is None  # now in the index

    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "inf":
        overwrite_tensor(weights, "model.layers.1.mlp.down_proj.weight", _inf)
    elif damage == "missing":
        (folder / "tokenizer.json").unlink()
    elif damage == "added":  # would change what transformers loads
        shutil.copy(weights, folder / "model-00002-of-00002.safetensors")
    else:  # a marker written before the files were recorded
        marker = folder / COMPLETE_MARKER
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "version": 1}))
    notice = f"{folder}: {_DAMAGE_NOTICES[damage]}; converting again"
    messages = []
    with pytest.warns(ConvertedModelChanged) as warned:
        loaded = load_model(settings, progress=lambda frac, msg: messages.append(msg))
    assert [str(w.message) for w in warned] == [notice] and notice in messages
    assert conversion_problem(folder, file_identity(gguf)) is None
    again = load_file(weights)
    assert again.keys() == fresh.keys()
    assert all(torch.equal(again[k], fresh[k]) for k in fresh)
    ids = tiny_ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, tiny_model("llama")(ids).logits,
                                   rtol=0, atol=1e-5)
    assert load_model(settings, progress=lambda frac, msg: messages.append(msg))  # no notice
    assert messages.count(notice) == 1


def test_an_analysis_on_a_damaged_conversion_says_so_and_gives_the_fresh_numbers(
        tmp_path, isolated_cache):
    # Guards: the user sees one line naming the file, and the analysis runs on a fresh
    # conversion instead of inf weights (whose warnings blamed fp16 overflow in float32).
    gguf = tiny_gguf(tmp_path / "tiny.gguf")
    request = AnalysisRequest(
        ModelSettings(str(gguf), device="cpu"),
        (CalibrationSettings("builtin:random", samples=4, seqlen=16, seed=1),),
        EstimatorSettings(bins=8, knn_k=3, renyi_alpha=2.0, batch_size=4), use_cache=False)
    first = service.analyze(request)
    (folder,) = [p for p in (isolated_cache / "models").iterdir() if not p.name.startswith(".")]
    overwrite_tensor(folder / "model.safetensors", "model.layers.1.mlp.down_proj.weight", _inf)

    messages = []
    with pytest.warns(ConvertedModelChanged):
        second = service.analyze(request, progress=lambda frac, msg: messages.append(msg))
    notice = f"{folder}: model.safetensors changed since it was converted; converting again"
    assert messages.count(notice) == 1
    assert second.warnings == [] and second.runs[0].warnings == []
    assert second.runs[0].blocks == first.runs[0].blocks


# --------------------------------------------------------------------------- data loss


def _dead_pid() -> int:
    """The id of a process that has exited (so its temporary files are stale)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _export_args(model, out, k="1", *extra):
    return ["--quiet", "export", "--model", str(model), "--calibration", "builtin:random",
            *SMALL, "--granularity", "layer", "--k", k, "--out", str(out), *extra]


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


def test_overwrite_never_replaces_a_folder_that_is_not_an_export(tiny_llama_dir, tmp_path,
                                                                 isolated_cache, monkeypatch,
                                                                 capsys):
    # Guards: --overwrite replaced any non-empty folder (a user's home, `--out .`); it now
    # replaces only a previous export (its entrodrop.json), whatever the flag says.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert cli.main(_export_args(tiny_llama_dir, mine, "1", "--overwrite")) == 2
    assert "holds no export of this tool (no entrodrop.json)" in _one_error_line(capsys)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]

    for cwd_has_files in (True, False):
        here = tmp_path / f"cwd-{cwd_has_files}"
        here.mkdir()
        if cwd_has_files:
            (here / "notes.txt").write_text("mine")
        monkeypatch.chdir(here)
        for out in (".", "..", str(here)):
            assert cli.main(_export_args(tiny_llama_dir, out, "1", "--overwrite")) == 2
            assert "is the current folder or one that holds it" in _one_error_line(capsys)
        assert [p.name for p in here.iterdir()] == (["notes.txt"] if cwd_has_files else [])

    export = tmp_path / "export"  # a previous export is replaced, as before
    assert cli.main(_export_args(tiny_llama_dir, export, "1")) == 0
    assert cli.main(_export_args(tiny_llama_dir, export, "2", "--overwrite")) == 0
    assert len(json.loads((export / MANIFEST_NAME).read_text())["blocks"]) == 2


def _strand(out: Path, pid: int) -> Path:
    """The state a kill between the two renames of an overwrite leaves: the target gone,
    the previous export in `.<name>.<pid>.<random>.old/previous`."""
    aside = out.parent / f".{out.name}.{pid}.k1ll3d00.old"
    aside.mkdir()
    out.rename(aside / "previous")
    return aside


def test_a_kill_between_the_renames_of_an_overwrite_is_undone(tiny_llama_dir, tmp_path,
                                                              isolated_cache, capsys):
    # Guards: the previous export no longer stays stranded in a `.old` folder with the
    # target absent: the next export (or its up-front target check) puts it back, or
    # removes the aside folder once the target exists again. A live writer's is left alone.
    out = tmp_path / "exports" / "pruned"
    assert cli.main(_export_args(tiny_llama_dir, out, "1")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    aside = _strand(out, _dead_pid())
    assert not out.exists()
    service.check_export_target(out, overwrite=True)  # what every export runs first
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # restored
    assert not aside.exists()

    aside = _strand(out, _dead_pid())
    assert cli.main(_export_args(tiny_llama_dir, out, "2", "--overwrite")) == 0, \
        capsys.readouterr().err
    assert len(json.loads((out / MANIFEST_NAME).read_text())["blocks"]) == 2
    assert [p.name for p in out.parent.iterdir()] == ["pruned"]  # nothing stranded

    live = out.parent / f".pruned.{os.getpid()}.l1ve0000.old"  # a writer mid-overwrite
    (live / "previous").mkdir(parents=True)
    service.check_export_target(out, overwrite=True)
    assert live.is_dir()


def test_a_killed_json_write_leaves_no_temporary_file_for_good(tiny_llama_dir, tmp_path,
                                                               isolated_cache):
    # Guards: `--out` JSON is written through a temporary file beside it; one left by a
    # writer killed before its rename is removed by the next write to that file (a live
    # writer's, and other files, are kept).
    folder = tmp_path / "results"
    folder.mkdir()
    dead = folder / f".p.json.{_dead_pid()}.x1y2z3.tmp"
    live = folder / f".p.json.{os.getpid()}.a1b2c3.tmp"
    other = folder / f".other.json.{_dead_pid()}.q1w2e3.tmp"
    for f in (dead, live, other):
        f.write_text('{"half": ')
    assert cli.main(["--quiet", "analyze", "--model", str(tiny_llama_dir), "--calibration",
                     "builtin:random", *SMALL, "--out", str(folder / "p.json")]) == 0
    assert json.loads((folder / "p.json").read_text())["runs"]
    assert not dead.exists() and live.exists() and other.exists()


@pytest.mark.parametrize("damage", ["entry-is-a-folder", "profiles-is-a-file", "read-only"])
def test_a_cache_that_cannot_be_written_does_not_throw_the_result_away(
        tiny_llama_dir, tmp_path, isolated_cache, monkeypatch, capsys, damage):
    # Guards: a finished analysis whose cache entry cannot be written (read-only cache, an
    # entry path that is a folder) was thrown away with exit 2; it now warns on stderr and
    # still writes the result (exit 0).
    args = ["analyze", "--model", str(tiny_llama_dir), "--calibration", "builtin:random",
            *SMALL]
    request = AnalysisRequest(
        ModelSettings(str(tiny_llama_dir), device="cpu"),
        (CalibrationSettings("builtin:random", samples=4, seqlen=16),),
        EstimatorSettings(bins=8, knn_k=3, renyi_alpha=2.0))
    key = service.analysis.profile_key(
        service.cache_parts(request.model, request.calibrations[0], request.estimators))
    profiles = isolated_cache / "profiles"
    if damage == "entry-is-a-folder":
        (profiles / f"{key}.json").mkdir(parents=True)
    elif damage == "profiles-is-a-file":
        isolated_cache.mkdir(parents=True, exist_ok=True)
        profiles.write_text("not a folder")
    else:  # root ignores permission bits, so the write itself is made to fail
        def read_only(*_args, **_kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("analysis.profile.atomic_write_text", read_only)
    out = tmp_path / "p.json"
    assert cli.main(["--quiet", *args, "--out", str(out)]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    warned = [ln for ln in err if "could not be cached" in ln]
    assert len(warned) == 1 and key in warned[0] and "Traceback" not in str(err), err
    assert json.loads(out.read_text())["runs"][0]["blocks"]
