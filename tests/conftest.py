"""Shared fixtures: the real reference data (when present) and an isolated cache per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

if not os.environ.get("SATCOMPRESS_DATA_DIR") and (SHARED_DATA / "README.md").is_file():
    os.environ["SATCOMPRESS_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tiny-tensor tests are fastest, and repeatable, on one thread (the machine is shared)."""
    import torch

    torch.set_num_threads(1)


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


def make_sequences(n_per_class: int = 40, n_timesteps: int = 12, n_classes: int = 3, seed: int = 0):
    """Tiny light-curve-like problem: each class a different bump shape in two bands."""
    import numpy as np

    from satcompress.tasks import Split, TaskData

    rng = np.random.default_rng(seed)
    time = np.linspace(-1, 1, n_timesteps)

    def part(offset: int) -> Split:
        y = np.repeat(np.arange(n_classes), n_per_class)
        width = 0.2 + 0.3 * y[:, None]
        g = np.exp(-((time[None] - 0.1 * y[:, None]) ** 2) / width)
        r = np.exp(-((time[None] + 0.2 * y[:, None]) ** 2) / (2 * width))
        x = np.stack([g, r], axis=-1) + rng.normal(0, 0.05, (len(y), n_timesteps, 2))
        return Split(x=x.astype(np.float32), y=y.astype(np.int64),
                     groups=np.arange(len(y)) + offset * len(y))

    return TaskData(train=part(0), val=part(1), test=part(2),
                    class_names=tuple(f"class {c}" for c in range(n_classes)))


def tiny_mlp(seed: int = 0):
    """A ResidualMLP of about 1.3k parameters for the 6-feature, 3-class blobs."""
    import torch

    from satcompress.networks import ResidualMLP

    torch.manual_seed(seed)
    return ResidualMLP(n_features=6, n_classes=3, width=16, depth=2, dropout=0.0).eval()


def tiny_t2(seed: int = 0):
    """A T2Transformer of about 5k parameters for the 12-step, 2-band sequences."""
    import torch

    from satcompress.networks import T2Transformer

    torch.manual_seed(seed)
    return T2Transformer(n_timesteps=12, n_channels=2, n_classes=3, d_model=16, n_heads=2,
                         ff_dim=32, n_blocks=1, dropout=0.0).eval()


@pytest.fixture(params=["mlp", "t2"])
def tiny_case(request):
    """(model, data) for both reference architectures in miniature."""
    if request.param == "mlp":
        return tiny_mlp(), make_blobs()
    return tiny_t2(), make_sequences()


def register_blob_task(monkeypatch):
    """The blobs problem as a user task judged by accuracy, registered under the name
    ``blobs`` so commands given ``--task blobs`` find it (undone after the test)."""
    from satcompress.tasks import registry

    blobs = registry.Task("blobs", "tiny", "satcompress.tasks.user", metric="accuracy",
                          data=make_blobs())
    monkeypatch.setitem(registry.TASKS, "blobs", blobs)
    return blobs
