"""Atomic outputs: the usual permissions, fsync of the file and its folder before and after the
rename, and an untouched destination when writing fails or is interrupted."""

from __future__ import annotations

import os
import stat

import pytest

from satcompress import fileio
from satcompress.fileio import atomic_path, atomic_write_bytes, atomic_write_text, file_sha256


@pytest.fixture
def umask():
    """Set the process umask for one test; restored afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_usual_permissions_under_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    written = atomic_write_text(tmp_path / "report.md", "hello\n")
    with atomic_path(tmp_path / "table.bin") as temporary:
        with open(temporary, "wb") as stream:  # written by a library, as classify-alerts does
            stream.write(b"\x00\x01")
    for path in (written, tmp_path / "table.bin"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_file_and_folder_are_synced_around_the_rename(tmp_path, monkeypatch):
    synced, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(descriptor):
        info = os.fstat(descriptor)
        synced.append(("folder" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
        real_fsync(descriptor)

    def replace(source, target):
        synced.append(("rename", None))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    destination = atomic_write_bytes(tmp_path / "out" / "model.sca", b"payload")
    assert destination.read_bytes() == b"payload"
    events = [kind for kind, _ in synced]
    assert events.index("file") < events.index("rename") < len(events) - 1
    assert synced[events.index("file")][1] == destination.stat().st_ino
    assert synced[-1] == ("folder", destination.parent.stat().st_ino)
    created = ("folder", tmp_path.stat().st_ino)  # the new "out" folder's entry in its parent
    assert created in synced[: events.index("rename")]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_write_leaves_the_destination_untouched(tmp_path, error):
    destination = atomic_write_text(tmp_path / "run.json", "old\n")
    with pytest.raises(type(error)):
        with atomic_path(destination) as temporary:
            temporary.write_text("half of the new")
            raise error
    assert destination.read_text() == "old\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.json"]


def test_a_failed_fsync_leaves_the_destination_untouched(tmp_path, monkeypatch):
    destination = atomic_write_text(tmp_path / "run.json", "old\n")

    def failing(descriptor):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write_text(destination, "new\n")
    assert destination.read_text() == "old\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.json"]


def test_an_existing_temporary_name_is_never_reused(tmp_path, monkeypatch):
    names = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(fileio.secrets, "token_hex", lambda _: next(names))
    planted = tmp_path / ".x.json.aaaaaaaaaaaa.tmp"
    planted.write_text("someone else's")
    atomic_write_text(tmp_path / "x.json", "{}")
    assert planted.read_text() == "someone else's"
    assert sorted(path.name for path in tmp_path.iterdir()) == [planted.name, "x.json"]


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    content = os.urandom(3 << 20)
    path = atomic_write_bytes(tmp_path / "blob", content)
    assert file_sha256(path) == hashlib.sha256(content).hexdigest()
