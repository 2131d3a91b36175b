"""Atomic, durable file output (a reader never sees a half-written file, an interruption or a
power cut loses nothing already written) and file checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FILE_MODE", "atomic_path", "atomic_write_bytes", "atomic_write_text", "file_sha256",
           "move_into_place"]

FILE_MODE = 0o666
"""Mode an output file is created with, narrowed by the process umask as by ``open(path, "w")``
(0644 under the usual umask 022): the kernel applies the umask, so no thread ever changes it."""

_NAME_TRIES = 100


def _sync(path: Path, flags: int = os.O_RDONLY) -> None:
    """``fsync`` the file or folder at ``path``: its content (or entries) reach the disk."""
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """``fsync`` a folder so that a file created, renamed or removed in it stays so (POSIX;
    Windows cannot open a folder and needs no such call)."""
    if os.name == "posix":
        _sync(folder, os.O_RDONLY | os.O_DIRECTORY)


def _make_folder(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each new entry synced into its parent."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _sync_folder(created.parent)


def _new_file_beside(destination: Path) -> Path:
    """A new, empty, uniquely named file in ``destination``'s folder, mode :data:`FILE_MODE`
    less the umask (``O_EXCL``: never an existing file or a planted link)."""
    for _ in range(_NAME_TRIES):
        candidate = destination.with_name(f".{destination.name}.{secrets.token_hex(6)}.tmp")
        try:
            descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            continue
        os.close(descriptor)
        return candidate
    raise FileExistsError(f"Could not create a temporary file beside {destination} after "
                          f"{_NAME_TRIES} tries; remove the stale .{destination.name}.*.tmp files.")


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary path beside ``destination``; move it into place only on success.

    The caller writes the file at the yielded path (and closes it). Then the file is
    ``fsync``-ed, renamed over ``destination`` (``os.replace``: atomic, same folder) and the
    folder ``fsync``-ed, so after a crash ``destination`` holds either its old content or the
    whole new one. The file is created with the usual permissions (:data:`FILE_MODE` less the
    umask). On an exception (or interruption) the temporary file is removed and
    ``destination`` is untouched.
    """
    destination = Path(destination)
    _make_folder(destination.parent)
    temporary = _new_file_beside(destination)
    try:
        yield temporary
        _sync(temporary)
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(destination.parent)


def atomic_write_bytes(destination: str | os.PathLike, content: bytes) -> Path:
    """Write ``content`` to ``destination`` atomically and durably (see :func:`atomic_path`)
    and return the destination path."""
    with atomic_path(destination) as temporary:
        temporary.write_bytes(content)
    return Path(destination)


def atomic_write_text(destination: str | os.PathLike, content: str) -> Path:
    """Write UTF-8 ``content`` to ``destination`` atomically and return the destination path."""
    return atomic_write_bytes(destination, content.encode("utf-8"))


def move_into_place(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Rename a complete file (on the same file system) to ``destination``, atomically and
    durably: both folders are ``fsync``-ed."""
    source, destination = Path(source), Path(destination)
    _make_folder(destination.parent)
    os.replace(source, destination)
    _sync_folder(destination.parent)
    if source.parent != destination.parent:
        _sync_folder(source.parent)
    return destination


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
