"""Where the runtime cache lives, atomic file writes, and room on the disk for them."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from analysis.errors import EntroDropError

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


def remove_stale_temp_files(parent: Path, name: str | None = None) -> list[Path]:
    """Delete the `atomic_write_bytes` temporary files in `parent` (for `name`, or for any
    name) whose process no longer runs (killed between writing and renaming); nothing valid
    is lost."""
    return _remove_stale(parent, name, ".tmp", dirs=False)


def stale_temp_dirs(parent: Path, name: str, suffix: str) -> list[Path]:
    """The `make_temp_dir` folders in `parent` for `name` whose process no longer runs
    (nothing is removed: the caller decides what to keep from them)."""
    pattern = re.compile(r"^\." + re.escape(name) + r"\.(\d+)\.[^.]+" + re.escape(suffix) + "$")
    if os.name != "posix" or not Path(parent).is_dir():
        return []
    return sorted(p for p in Path(parent).iterdir()
                  if (m := pattern.match(p.name)) and p.is_dir() and not _pid_alive(int(m.group(1))))


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


# --------------------------------------------------------------------------- user-named paths


class PathError(EntroDropError):
    """A file or folder the user named cannot be read or written; the message names it."""


def _why(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ELOOP:
        return "it is a symlink loop"
    if isinstance(err, RuntimeError) and "symlink loop" in str(err).lower():
        return "it is a symlink loop"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror[0].lower() + err.strerror[1:]
    return " ".join(str(err).split()) or type(err).__name__


def check_input_file(path: str | os.PathLike, what: str) -> None:
    """Refuse, naming the file, an input that exists and yet cannot be read as a file: a
    symlink loop, a FIFO or device (reading it would block or never end), no permission.
    A path that does not exist, or a folder, is left to the reader's own message."""
    path = Path(path).expanduser()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise PathError(f"cannot read {what} {path}: {_why(err)}") from None
    if stat.S_ISDIR(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        raise PathError(f"{what} {path} is not a regular file (a FIFO, socket or device); "
                        "give a file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise PathError(f"cannot read {what} {path}: {_why(err)}") from None


@contextmanager
def guarded_read(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a failure to read `path` (an OSError, a symlink loop, bytes that are not the text
    they should be) into one PathError naming the file; errors that already say what to do
    (EntroDropError) pass through."""
    try:
        yield
    except EntroDropError:
        raise
    except (OSError, UnicodeError) as err:
        raise PathError(f"cannot read {what} {Path(path)}: {_why(err)}") from None
    except RuntimeError as err:
        if "symlink loop" not in str(err).lower():
            raise
        raise PathError(f"cannot read {what} {Path(path)}: {_why(err)}") from None


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Refuse, before any work, an output file that cannot be written: a folder, a symlink
    loop, a path under a file, or a folder this process cannot create files in (tried for
    real: permission bits do not stop root). Nothing is created. Returns the path."""
    path = Path(path).expanduser()
    try:
        if path.is_dir():
            raise PathError(f"{what} {path} is a folder; give a file name such as result.json")
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a parent is a file
        pass
    except OSError as err:
        raise PathError(f"cannot write {what} {path}: {_why(err)}") from None
    existing = None
    for ancestor in path.parents:
        try:
            if ancestor.exists():
                existing = ancestor
                break
        except OSError as err:
            raise PathError(f"cannot write {what} {path}: {ancestor}: {_why(err)}") from None
    if existing is not None and not existing.is_dir():
        raise PathError(f"cannot write {what} {path}: {existing} is a file, so nothing can "
                        "be created under it; choose another path")
    if existing is not None:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".entrodrop-", suffix=".probe", dir=existing))
        except OSError as err:
            raise PathError(f"cannot write {what} {path}: {_why(err)} in {existing}; choose "
                            "another folder") from None
    return path
