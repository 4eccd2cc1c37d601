"""Run the entrodrop CLI, but stop dead at a chosen point so that a test can SIGKILL it there.

    python -m tests.reliability.pause_driver MODULE:ATTR[.ATTR] NTH WHEN FLAG -- CLI ARGS...

On the NTH call of the patched function (before or after the original runs, WHEN), the
process writes FLAG and sleeps until it is killed. The test polls for FLAG, so the kill
lands at exactly that point without guessing a delay.

WHEN may also be `barrier:K`: FLAG is then a folder; the process adds a file to it and
waits until K processes have arrived, then all call the original at the same moment.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path


def _pause_at(target: str, nth: int, when: str, flag: Path) -> None:
    module_name, _, attr_path = target.partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = attr_path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0

    def paused(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth and when.startswith("barrier:"):
            _barrier(flag, int(when.split(":")[1]))
        if calls == nth and when == "before":
            _stop(flag)
        result = original(*args, **kwargs)
        if calls == nth and when == "after":
            _stop(flag)
        return result

    setattr(owner, name, paused)


def _stop(flag: Path) -> None:
    flag.write_text("paused")
    while True:
        time.sleep(60)


def _barrier(folder: Path, parties: int, timeout: float = 300.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise SystemExit("barrier: the other processes never arrived")
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    target, nth, when, flag, sep, *cli_args = argv
    assert sep == "--" and (when in ("before", "after") or when.startswith("barrier:")), argv
    _pause_at(target, int(nth), when, Path(flag))
    from entrodrop.cli import main as cli_main

    return cli_main(cli_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
