"""Where an export is written, and the errors of exports.

Every export (block, width, GGUF; in memory or streamed) is written into a temporary folder
beside its target and renamed into place once complete, so the target appears complete or
not at all: `staged_output_dir` checks the target first (`check_export_target`), refuses a
disk without room, and tidies what a killed export left behind
(`recover_interrupted_overwrite`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from analysis.errors import EntroDropError
from analysis.paths import disk_shortfall, make_temp_dir, remove_stale_temp_dirs, stale_temp_dirs

MANIFEST_NAME = "entrodrop.json"
"""The manifest every export carries; its presence marks a folder as an export of this tool."""


class ExportError(EntroDropError):
    """An export cannot be written; the message says why and what to do."""


class TargetExistsError(ExportError):
    """The target folder exists and is not empty, and overwrite was not asked for."""


class TargetIsFileError(ExportError):
    """The target path is a file, not a folder."""


class TargetNotWritableError(ExportError):
    """The target's parent folder cannot be created or written to."""


class InsufficientDiskSpaceError(ExportError):
    """The disk holding the target has less free space than the export needs."""


class UnsupportedExportError(ExportError):
    """This model cannot be exported in the requested form."""


def check_export_target(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse a target that cannot take an export, before any work is done: a file, a
    non-empty folder (unless `overwrite`), a path under a file, or a folder this process
    cannot write in (tried for real: permission bits do not stop root). Returns the parent
    folder, created if missing."""
    out_dir = Path(out_dir)
    if out_dir.is_file():
        raise TargetIsFileError(f"{out_dir} is a file; choose a folder path for the export")
    here = Path.cwd().resolve()
    try:
        resolved = out_dir.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise TargetNotWritableError(f"cannot use {out_dir} as the export folder: {err}") from None
    if resolved in (here, *here.parents):
        raise TargetExistsError(
            f"{out_dir} is the current folder or one that holds it; an export replaces its "
            "target, so choose a new folder for it (e.g. --out pruned-model)")
    recover_interrupted_overwrite(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise TargetExistsError(
                f"{out_dir} already exists and is not empty; choose another folder or allow "
                "overwrite")
        if not (out_dir / MANIFEST_NAME).is_file():
            # Overwrite replaces a previous export, never a folder of anything else.
            raise TargetExistsError(
                f"{out_dir} is not empty and holds no export of this tool (no {MANIFEST_NAME}), "
                "so it is not replaced even with overwrite; choose a new or empty folder")
    for ancestor in out_dir.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise TargetNotWritableError(
                    f"{ancestor} is a file, so no folder can be created under it; choose "
                    "another path for the export")
            break
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".probe", dir=parent))
    except OSError as err:
        raise TargetNotWritableError(
            f"cannot write in {parent}: {err.strerror or err}; choose another folder") from err
    return parent


@contextmanager
def staged_output_dir(out_dir: Path, *, overwrite: bool = False,
                      needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir`; on success it replaces `out_dir`, on
    error it is deleted and `out_dir` is left as it was.

    Refuses what `check_export_target` refuses, and a disk with less than `needed_bytes`
    (plus a margin) free. A temporary folder left by a killed export to the same target is
    deleted first.
    """
    out_dir = Path(out_dir)
    parent = check_export_target(out_dir, overwrite=overwrite)
    remove_stale_temp_dirs(parent, out_dir.name)
    shortfall = disk_shortfall(parent, needed_bytes) if needed_bytes is not None else None
    if shortfall is not None:
        need, free = shortfall
        raise InsufficientDiskSpaceError(
            f"the export needs about {_mib(need)} MiB but only {_mib(free)} MiB are free on "
            f"the disk holding {parent}; free some space or choose another disk"
        )
    try:
        tmp = make_temp_dir(parent, out_dir.name)
    except OSError as err:
        raise TargetNotWritableError(f"cannot write in {parent}: {err.strerror or err}") from err
    try:
        yield tmp
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_interrupted_overwrite(out_dir: Path) -> list[Path]:
    """Tidy what an overwrite killed between its two renames left beside `out_dir`: the
    previous export, moved aside into `.<name>.<pid>.<random>.old/previous`. While the
    target is absent it is moved back (restored); otherwise the aside folder is removed.
    Only folders of processes that no longer run are touched. Returns what was handled."""
    out_dir = Path(out_dir)
    handled = []
    for aside in stale_temp_dirs(out_dir.parent, out_dir.name, ".old"):
        previous = aside / "previous"
        if not out_dir.exists() and (previous / MANIFEST_NAME).is_file():
            os.replace(previous, out_dir)
        shutil.rmtree(aside, ignore_errors=True)
        handled.append(aside)
    return handled


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    # Tagged with this process id: a kill between the two renames below is undone by
    # recover_interrupted_overwrite on the next export to this target.
    aside = make_temp_dir(out_dir.parent, out_dir.name, suffix=".old")
    os.replace(out_dir, aside / "previous")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(aside / "previous", out_dir)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _mib(n: int) -> int:
    return math.ceil(n / 2**20)
