"""Where the runtime cache lives, atomic file writes, and room on the disk for them."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Room for configs, tokenizers and file headers on top of the weights.
DISK_MARGIN = 64 * 2**20


def cache_dir() -> Path:
    """`$ENTRODROP_CACHE_DIR`, or `cache/` in the repository root."""
    root = Path(os.environ.get("ENTRODROP_CACHE_DIR") or REPO_ROOT / "cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


def tensor_bytes(tensors) -> int:
    """Bytes the tensors hold, counting shared storage (tied weights) once."""
    seen, total = set(), 0
    for t in tensors:
        if not t.is_meta:
            ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            if ident in seen:
                continue
            seen.add(ident)
        total += t.numel() * t.element_size()
    return total


def disk_shortfall(folder: Path, needed_bytes: int) -> tuple[int, int] | None:
    """(bytes needed including DISK_MARGIN, bytes free) when the disk holding `folder`
    cannot take `needed_bytes` more, else None. Writers check before they start, so that a
    full disk fails at once with a message instead of halfway through a write."""
    free = shutil.disk_usage(folder).free
    need = needed_bytes + DISK_MARGIN
    return (need, free) if free < need else None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Tagged with this process id, like make_temp_dir: remove_stale_temp_files can then
    # tell a file left by a killed writer from one still being written.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def make_temp_dir(parent: Path, name: str, suffix: str = ".tmp") -> Path:
    """A new hidden folder in `parent` for building `name`, tagged with this process id,
    so that `remove_stale_temp_dirs` can tell when the process that made it is gone."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=suffix, dir=parent))


def remove_stale_temp_dirs(parent: Path, name: str | None = None,
                           suffix: str = ".tmp") -> list[Path]:
    """Delete the `make_temp_dir` folders in `parent` (for `name`, or for any name) whose
    process no longer runs (killed mid-write); they were never renamed into place, so
    nothing valid is lost."""
    return _remove_stale(parent, name, suffix, dirs=True)


def remove_stale_temp_files(parent: Path) -> list[Path]:
    """Delete the `atomic_write_bytes` temporary files in `parent` whose process no longer
    runs (killed between writing and renaming); nothing valid is lost."""
    return _remove_stale(parent, None, ".tmp", dirs=False)


def _remove_stale(parent: Path, name: str | None, suffix: str, dirs: bool) -> list[Path]:
    stem = re.escape(name) if name is not None else ".+"
    pattern = re.compile(r"^\." + stem + r"\.(\d+)\.[^.]+" + re.escape(suffix) + "$")
    removed = []
    if os.name != "posix" or not Path(parent).is_dir():
        return removed  # liveness is checked with kill(pid, 0), a POSIX idiom
    for path in Path(parent).iterdir():
        match = pattern.match(path.name)
        if not match or path.is_dir() != dirs or _pid_alive(int(match.group(1))):
            continue
        if dirs:
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True
