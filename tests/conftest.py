"""Shared fixtures: the real reference data (when present) and an isolated cache per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

if not os.environ.get("SATCOMPRESS_DATA_DIR") and (SHARED_DATA / "README.md").is_file():
    os.environ["SATCOMPRESS_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Downloads, preprocessed arrays and cached models go to a fresh folder per test run."""
    os.environ["SATCOMPRESS_CACHE_DIR"] = str(tmp_path_factory.mktemp("satcompress-cache"))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder of reference data; tests that need it are skipped where it is absent."""
    configured = os.environ.get("SATCOMPRESS_DATA_DIR")
    if not configured or not Path(configured).is_dir():
        pytest.skip("reference data not available: set SATCOMPRESS_DATA_DIR to ../shared/data")
    return Path(configured)
