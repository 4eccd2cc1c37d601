"""Concurrency: CLI processes that write the same cache entry at the same moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from analysis.paths import make_temp_dir, remove_stale_temp_dirs
from analysis.profile import ProfileCache
from tests.reliability.support import SMALL, start_paused_cli

ROUNDS = 3


def test_two_processes_writing_one_cache_key_never_corrupt_it(tiny_llama_dir, tmp_path):
    # Guards: cache entries are written atomically (temporary file + rename), so two
    # processes that finish the same analysis together leave one whole, valid entry. A
    # barrier inside ProfileCache.put makes both write at the same instant in every round.
    for round_no in range(ROUNDS):
        cache = tmp_path / f"cache-{round_no}"
        barrier = tmp_path / f"barrier-{round_no}"
        procs = [
            start_paused_cli(["analyze", "--model", tiny_llama_dir, "--calibration",
                              "builtin:random", *SMALL, "--out", tmp_path / f"r{round_no}-{i}.json"],
                             cache, at="analysis.profile:ProfileCache.put", nth=1,
                             when="barrier:2", flag=barrier)
            for i in range(2)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
        assert len(list(barrier.iterdir())) == 2  # both really wrote together

        profiles = cache / "profiles"
        names = sorted(p.name for p in profiles.iterdir())
        assert len(names) == 1 and names[0].endswith(".json"), names  # no temp files left
        key = names[0][: -len(".json")]
        entry = ProfileCache(profiles).get(key)  # parses and passes its checksum
        assert entry is not None
        outputs = [json.loads((tmp_path / f"r{round_no}-{i}.json").read_text()) for i in range(2)]
        assert entry.to_json()["blocks"] in (outputs[0]["blocks"], outputs[1]["blocks"])
        assert outputs[0]["blocks"] == outputs[1]["blocks"]


def test_cleanup_removes_only_temporary_folders_of_dead_processes(tmp_path):
    # Guards: clearing what a killed export or conversion left behind never deletes the
    # temporary folder of a process that is still writing (e.g. a second export).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    live = make_temp_dir(tmp_path, "model")  # this process: alive
    orphan = tmp_path / f".model.{dead_pid}.abcd1234.tmp"
    orphan.mkdir()
    other = tmp_path / f".other.{dead_pid}.abcd1234.tmp"
    other.mkdir()
    user_folder = tmp_path / "model"
    user_folder.mkdir()

    assert remove_stale_temp_dirs(tmp_path, "model") == [orphan]
    assert remove_stale_temp_dirs(tmp_path) == [other]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "model"])


def test_profile_cache_clears_temp_files_of_killed_writers_only(tmp_path):
    # A writer killed between writing its temporary file and renaming it leaves
    # `.<name>.<pid>.<random>.tmp` behind; opening the cache clears those of dead processes
    # and keeps a live writer's file, folders and the profiles themselves.
    from analysis.paths import atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    root = tmp_path / "profiles"
    root.mkdir()
    orphan = root / f".abc.json.{dead_pid}.k2j4h5_x.tmp"
    orphan.write_text("{half")
    live = root / f".def.json.{os.getpid()}.q8w7e6r5.tmp"
    live.write_text("{being written")
    folder = root / f".dir.{dead_pid}.abcd1234.tmp"
    folder.mkdir()
    atomic_write_text(root / "abc.json", "{}")  # a complete write leaves no temp file

    ProfileCache(root)
    assert sorted(p.name for p in root.iterdir()) == sorted([live.name, folder.name, "abc.json"])
