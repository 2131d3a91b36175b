"""Reference data files: a registry with pinned sources and checksums, and verified local copies."""

from satcompress.data.registry import (
    CACHE_DIR_VARIABLE,
    DATA_DIR_VARIABLE,
    DataFile,
    DataFileError,
    fetch,
    fetch_all,
    registry,
)

__all__ = [
    "CACHE_DIR_VARIABLE",
    "DATA_DIR_VARIABLE",
    "DataFile",
    "DataFileError",
    "fetch",
    "fetch_all",
    "registry",
]
