"""Atomic file output (a reader never sees a half-written file, an interruption loses nothing)
and file checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "file_sha256"]


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; move it into place only on success.

    The temporary file lives in the same folder, so the final ``os.replace`` is atomic. On an
    exception (or interruption) the temporary file is removed and ``destination`` is untouched.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_bytes(destination: str | os.PathLike, content: bytes) -> Path:
    """Write ``content`` to ``destination`` atomically and return the destination path."""
    with atomic_path(destination) as temporary:
        temporary.write_bytes(content)
    return Path(destination)


def atomic_write_text(destination: str | os.PathLike, content: str) -> Path:
    """Write UTF-8 ``content`` to ``destination`` atomically and return the destination path."""
    return atomic_write_bytes(destination, content.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
