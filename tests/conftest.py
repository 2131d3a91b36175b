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


def make_blobs(n_per_class: int = 60, n_features: int = 6, n_classes: int = 3, seed: int = 0):
    """A small, fixed, learnable classification problem as a TaskData (tiny-model tests)."""
    import numpy as np

    from satcompress.tasks import Split, TaskData

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.5, (n_classes, n_features))

    def part(offset: int) -> Split:
        y = np.repeat(np.arange(n_classes), n_per_class)
        x = (centres[y] + rng.normal(0, 1.0, (len(y), n_features))).astype(np.float32)
        groups = np.arange(len(y)) + offset * len(y)
        return Split(x=x, y=y.astype(np.int64), groups=groups)

    return TaskData(train=part(0), val=part(1), test=part(2),
                    class_names=tuple(f"class {c}" for c in range(n_classes)))


@pytest.fixture
def blobs():
    return make_blobs()
