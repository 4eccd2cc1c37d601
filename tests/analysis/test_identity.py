"""Model identity: full content hashes, remembered per file and trusted only while the
file's stat is unchanged and was not taken in the same timestamp tick as a write."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import analysis.identity as identity
from analysis.errors import EntroDropError
from analysis.identity import IdentityError, content_hash, file_identity, folder_identity
from analysis.models import model_identity
from tests.reliability.support import REPO

MIB = 2**20


def _ends_fingerprint(path: Path, chunk: int = 4 * MIB) -> str:
    """The identity this module replaced: size plus the first and last 4 MiB."""
    data = path.read_bytes()
    return hashlib.sha256(f"{len(data)}".encode() + data[:chunk] + data[-chunk:]).hexdigest()


def _weights(path: Path, mib: int = 12) -> Path:
    torch.manual_seed(0)
    save_file({"w": torch.randn(mib * MIB // 4)}, str(path))
    return path


def _edit_middle_keeping_mtime(path: Path) -> None:
    """Overwrite bytes in the middle, as merging an adapter in place does: same size, and
    mtime put back as it was; only ctime (which no call can set) tells."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        old = f.read(64)
        f.seek(st.st_size // 2)
        f.write(bytes(b ^ 0xFF for b in old))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.fixture()
def hashes(monkeypatch):
    """The paths content_hash is called on (a call is a full read of the file)."""
    calls: list[Path] = []
    real = identity.content_hash

    def counted(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(identity, "content_hash", counted)
    return calls


@pytest.fixture()
def no_racy_margin(monkeypatch):
    """Trust entries of files written a moment ago, so that a test shows what the stat
    alone detects (the racy rule would rehash them anyway)."""
    monkeypatch.setattr(identity, "RACY_MARGIN_NS", 0)


def _entry(index: Path) -> tuple[Path, dict]:
    (path,) = index.glob("*.json")
    return path, json.loads(path.read_text())


def test_content_hash_is_the_sha256_of_every_byte(tmp_path):
    path = _weights(tmp_path / "w.safetensors", mib=3)
    assert content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    assert content_hash(empty) == hashlib.sha256(b"").hexdigest()


def test_an_edit_in_the_middle_with_size_and_mtime_kept_changes_the_identity(
        tmp_path, hashes, no_racy_margin):
    # Guards: the old identity (size + first and last 4 MiB) missed this edit and the
    # profile cache served numbers of the old weights.
    path = _weights(tmp_path / "model.safetensors")
    index = tmp_path / "index"
    before, old_ends = file_identity(path, index_dir=index), _ends_fingerprint(path)
    assert file_identity(path, index_dir=index) == before
    assert hashes == [path]  # the second call was an index hit

    _edit_middle_keeping_mtime(path)
    assert _ends_fingerprint(path) == old_ends  # the old identity would have missed it
    after = file_identity(path, index_dir=index)
    assert after != before and after == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hashes == [path, path]  # caught by ctime, not by the racy rule (margin 0 here)


def test_a_matching_index_entry_is_trusted_without_reading_the_file(tmp_path, hashes):
    path = _weights(tmp_path / "model.safetensors", mib=1)
    index = tmp_path / "index"
    file_identity(path, index_dir=index)
    entry_path, entry = _entry(index)
    # A fake entry: the stat of the file, a hash it does not have, taken long after the
    # file was last written.
    st = path.stat()
    entry.update(sha256="ab" * 32, statted_ns=max(st.st_mtime_ns, st.st_ctime_ns) + 10**10)
    entry_path.write_text(json.dumps(entry))
    hashes.clear()
    assert file_identity(path, index_dir=index) == "ab" * 32
    assert hashes == []


@pytest.mark.parametrize("field", ["size", "mtime_ns", "ctime_ns", "inode", "device"])
def test_any_stat_field_that_differs_forces_a_rehash(tmp_path, hashes, field):
    path = _weights(tmp_path / "model.safetensors", mib=1)
    index = tmp_path / "index"
    real = file_identity(path, index_dir=index)
    entry_path, entry = _entry(index)
    st = path.stat()
    entry.update(sha256="ab" * 32, statted_ns=max(st.st_mtime_ns, st.st_ctime_ns) + 10**10)
    entry[field] += 1
    entry_path.write_text(json.dumps(entry))
    hashes.clear()
    assert file_identity(path, index_dir=index) == real
    assert hashes == [path]
    assert _entry(index)[1]["sha256"] == real  # and the entry was put right


@pytest.mark.parametrize("after_write_s, trusted", [(0.0, False), (1.9, False), (2.1, True)])
def test_racy_entries_are_not_trusted(tmp_path, hashes, after_write_s, trusted):
    # Guards git's "racy clean" case: a write in the same timestamp tick as the stat taken
    # for the entry leaves every stat field equal, so an entry whose file had been written
    # less than RACY_MARGIN_NS before that stat cannot vouch for the content. Simulated
    # here by an entry whose stat matches but whose hash is of other content.
    path = _weights(tmp_path / "model.safetensors", mib=1)
    index = tmp_path / "index"
    real = file_identity(path, index_dir=index)
    entry_path, entry = _entry(index)
    st = path.stat()
    last_write = max(st.st_mtime_ns, st.st_ctime_ns)
    entry.update(sha256="ab" * 32, statted_ns=last_write + int(after_write_s * 1e9))
    entry_path.write_text(json.dumps(entry))
    hashes.clear()
    assert file_identity(path, index_dir=index) == ("ab" * 32 if trusted else real)
    assert hashes == ([] if trusted else [path])


def test_a_file_just_written_is_hashed_again_until_it_has_settled(tmp_path, hashes):
    path = _weights(tmp_path / "model.safetensors", mib=1)
    index = tmp_path / "index"
    file_identity(path, index_dir=index)
    file_identity(path, index_dir=index)
    assert hashes == [path, path]  # both within RACY_MARGIN_NS of the write


@pytest.mark.parametrize("damage", ["garbage", "not-a-dict", "bad-hash", "other-path",
                                    "old-version", "empty"])
def test_a_corrupt_or_foreign_entry_is_ignored_and_rewritten(tmp_path, hashes, damage):
    path = _weights(tmp_path / "model.safetensors", mib=1)
    index = tmp_path / "index"
    real = file_identity(path, index_dir=index)
    entry_path, entry = _entry(index)
    st = path.stat()
    entry["statted_ns"] = max(st.st_mtime_ns, st.st_ctime_ns) + 10**10  # else trusted
    text = {"garbage": '{"version": 1, "sha', "not-a-dict": "[1, 2]", "empty": "",
            "bad-hash": json.dumps({**entry, "sha256": "xyz"}),
            "other-path": json.dumps({**entry, "sha256": "ab" * 32, "path": "/elsewhere"}),
            "old-version": json.dumps({**entry, "sha256": "ab" * 32, "version": 0})}[damage]
    entry_path.write_text(text)
    hashes.clear()
    assert file_identity(path, index_dir=index) == real
    assert hashes == [path]
    assert _entry(index)[1]["sha256"] == real


def test_a_file_that_changes_while_it_is_hashed_is_hashed_again(tmp_path, monkeypatch):
    path = _weights(tmp_path / "model.safetensors", mib=1)
    real = identity.content_hash
    calls = []

    def writes_during_the_first_read(p):
        calls.append(p)
        digest = real(p)
        if len(calls) == 1:
            with open(p, "ab") as f:
                f.write(b"\0" * 8)  # another process still writing the file
        return digest

    monkeypatch.setattr(identity, "content_hash", writes_during_the_first_read)
    got = file_identity(path, index_dir=tmp_path / "index")
    assert len(calls) == 2 and got == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_that_never_settles_is_a_user_error(tmp_path, monkeypatch):
    path = _weights(tmp_path / "model.safetensors", mib=1)
    real = identity.content_hash

    def always_written(p):
        digest = real(p)
        with open(p, "ab") as f:
            f.write(b"\0")
        return digest

    monkeypatch.setattr(identity, "content_hash", always_written)
    with pytest.raises(IdentityError, match="kept changing while it was read"):
        file_identity(path, index_dir=tmp_path / "index")


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(EntroDropError, match=r"cannot read .*gone\.safetensors"):
        file_identity(tmp_path / "gone.safetensors", index_dir=tmp_path / "index")


def test_the_index_is_keyed_by_the_resolved_path(tmp_path, hashes, no_racy_margin):
    blob = _weights(tmp_path / "blob", mib=1)
    link = tmp_path / "model.safetensors"
    link.symlink_to(blob)  # as in a Hugging Face snapshot
    index = tmp_path / "index"
    assert file_identity(link, index_dir=index) == file_identity(blob, index_dir=index)
    assert hashes == [blob]
    assert len(list(index.glob("*.json"))) == 1


def test_an_unwritable_index_only_costs_a_rehash(tmp_path):
    path = _weights(tmp_path / "model.safetensors", mib=1)
    not_a_folder = tmp_path / "index"
    not_a_folder.write_text("")
    assert file_identity(path, index_dir=not_a_folder) == content_hash(path)


def test_concurrent_processes_agree_and_leave_a_valid_index(tmp_path):
    path = _weights(tmp_path / "model.safetensors", mib=8)
    index = tmp_path / "index"
    code = ("import sys; from pathlib import Path; from analysis.identity import file_identity;"
            "print(file_identity(Path(sys.argv[1]), index_dir=Path(sys.argv[2])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(index)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert outs == {content_hash(path)}
    assert sorted(p.name for p in index.iterdir() if not p.name.endswith(".json")) == []
    assert _entry(index)[1]["sha256"] == content_hash(path)


def test_folder_identity_covers_names_and_model_files_only(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    _weights(folder / "model.safetensors", mib=1)
    (folder / "config.json").write_text('{"a": 1}')
    index = tmp_path / "index"

    def ident(**kw):
        return folder_identity(folder, index_dir=index, **kw)

    first = ident()
    (folder / "README.md").write_text("notes")  # not part of the model
    (folder / "sub").mkdir()
    assert ident() == first
    (folder / "tokenizer.model").write_bytes(b"spm")
    with_tokenizer = ident()
    assert with_tokenizer != first
    assert ident(exclude=("tokenizer.model",)) == first
    (folder / "config.json").rename(folder / "config2.json")
    assert ident() != with_tokenizer


def test_model_identity_of_a_folder_sees_an_edit_in_the_middle(tmp_path, isolated_cache,
                                                               no_racy_margin):
    from tests.tiny_models import save_tiny

    folder = save_tiny("llama", tmp_path / "tiny")
    _weights(folder / "extra.safetensors")  # > 8 MiB: the old identity read only its ends
    before = model_identity(str(folder))
    assert model_identity(str(folder)) == before
    _edit_middle_keeping_mtime(folder / "extra.safetensors")
    assert model_identity(str(folder)) != before
    assert list((isolated_cache / "identity").glob("*.json"))
