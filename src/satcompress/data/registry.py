"""Where every reference data file comes from, and how to get a verified local copy.

Each file is declared once in ``registry.tsv`` (beside this module): its name (its path
under the data directory), size, sha256, and the public repository, commit and path it is
downloaded from, with the licence. :func:`fetch` returns a local path whose checksum has
been verified:

1. in the directory named by ``SATCOMPRESS_DATA_DIR``, when that variable is set and the
   file is there;
2. else in the download cache (``SATCOMPRESS_CACHE_DIR``, default the user cache), where
   `pooch <https://www.fatiando.org/pooch>`_ downloads it from the pinned commit.

The data files themselves are never part of the repository.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pooch

from satcompress.fileio import file_sha256

__all__ = [
    "DATA_DIR_VARIABLE",
    "CACHE_DIR_VARIABLE",
    "DataFile",
    "DataFileError",
    "registry",
    "fetch",
    "fetch_all",
]

DATA_DIR_VARIABLE = "SATCOMPRESS_DATA_DIR"
CACHE_DIR_VARIABLE = "SATCOMPRESS_CACHE_DIR"


class DataFileError(RuntimeError):
    """A reference data file is missing, unknown, or does not match its checksum."""


@dataclass(frozen=True)
class DataFile:
    """One registered data file.

    Attributes
    ----------
    name : str
        Path of the file under the data directory, e.g. ``flares/sharp_geM_24h/dataset.csv``.
    size_bytes : int
        Size of the file.
    sha256 : str
        Hex digest the local copy must match.
    repository, commit, path_in_repository : str
        Public GitHub source, pinned at a commit.
    licence : str
        Licence of the source repository.
    """

    name: str
    size_bytes: int
    sha256: str
    repository: str
    commit: str
    path_in_repository: str
    licence: str

    @property
    def url(self) -> str:
        """Public download address of the file at its pinned commit."""
        return (
            f"https://raw.githubusercontent.com/{self.repository}/{self.commit}/"
            f"{quote(self.path_in_repository)}"
        )


@functools.cache
def registry() -> dict[str, DataFile]:
    """All registered data files, by name."""
    text = resources.files("satcompress.data").joinpath("registry.tsv").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    files = {}
    for row in csv.DictReader(lines, delimiter="\t"):
        files[row["name"]] = DataFile(
            name=row["name"],
            size_bytes=int(row["bytes"]),
            sha256=row["sha256"],
            repository=row["repository"],
            commit=row["commit"],
            path_in_repository=row["path_in_repository"],
            licence=row["licence"],
        )
    return files


@functools.cache
def _verified(path: Path, size_bytes: int, mtime_ns: int, sha256: str) -> bool:
    """Checksum of a file, cached per (path, size, mtime) so a process hashes each file once."""
    return file_sha256(path) == sha256


def _cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    return Path(configured) if configured else Path(pooch.os_cache("satcompress"))


def fetch(name: str) -> Path:
    """Return a verified local path to the registered data file ``name``.

    Raises
    ------
    DataFileError
        If ``name`` is not registered, if the local copy does not match its sha256, or if
        there is no local copy and the download fails (e.g. offline).
    """
    files = registry()
    if name not in files:
        close = [known for known in files if name.split("/")[-1] in known]
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataFileError(
            f"Unknown data file {name!r}: it is not in satcompress's data registry.{hint}"
        )
    entry = files[name]

    data_dir = os.environ.get(DATA_DIR_VARIABLE)
    if data_dir:
        local = Path(data_dir) / name
        if local.is_file():
            stat = local.stat()
            if not _verified(local.resolve(), stat.st_size, stat.st_mtime_ns, entry.sha256):
                raise DataFileError(
                    f"{local} does not match its registered sha256 {entry.sha256}: the file is "
                    f"corrupt or a different version. Replace it with the file from {entry.url}, "
                    f"or unset {DATA_DIR_VARIABLE} to download a fresh copy."
                )
            return local

    cache = _cache_dir()
    try:
        path = pooch.retrieve(
            entry.url,
            known_hash=f"sha256:{entry.sha256}",
            fname=name.replace("/", "__"),
            path=cache,
            progressbar=False,
        )
    except ValueError as error:  # pooch's checksum mismatch
        raise DataFileError(
            f"The download of {name!r} from {entry.url} does not match its registered sha256 "
            f"({error}). Delete {cache} and retry, or place the verified file under "
            f"${DATA_DIR_VARIABLE}/{name}."
        ) from error
    except Exception as error:  # network failures come as many types (requests, OSError)
        where = f"${DATA_DIR_VARIABLE}={data_dir}" if data_dir else f"{DATA_DIR_VARIABLE} (not set)"
        raise DataFileError(
            f"Data file {name!r} is not available locally and could not be downloaded from "
            f"{entry.url} ({type(error).__name__}). Looked in {where} and in the cache {cache}. "
            f"Set {DATA_DIR_VARIABLE} to a folder holding {name} (for this project: the shared "
            f"reference data folder, ../shared/data), or connect to the internet."
        ) from error
    return Path(path)


def fetch_all(prefix: str) -> list[Path]:
    """Fetch every registered file whose name starts with ``prefix``, in name order."""
    names = sorted(name for name in registry() if name.startswith(prefix))
    if not names:
        raise DataFileError(f"No registered data file starts with {prefix!r}.")
    return [fetch(name) for name in names]
