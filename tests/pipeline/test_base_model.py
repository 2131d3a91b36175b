"""Base models: trained on real data, saved weights-only, loaded without running file code."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from satcompress.pipeline import base_model
from satcompress.tasks import registry


@pytest.fixture
def quick_flares(monkeypatch, real_data_dir):
    """The flare task with a 2-epoch training budget, so the real pipeline runs in seconds."""
    task = registry.TASKS["flares"]
    quick = dataclasses.replace(task, train_settings=dict(task.train_settings, max_epochs=2))
    monkeypatch.setitem(registry.TASKS, "flares", quick)
    return quick


def test_train_save_load_round_trip_on_real_flare_data(quick_flares, tmp_path):
    trained = base_model.train_base_model("flares", seed=0)
    parameters = sum(p.numel() for p in trained.model.parameters())
    assert parameters >= 1_000_000  # deliberately over-parameterised, like the published base
    assert -1.0 <= trained.metrics["tss"] <= 1.0 and "hss" in trained.metrics
    path = base_model.save_model(trained.model, tmp_path / "flares.pt",
                                 {"task": "flares", "width_multiplier": 1.0, "depth_multiplier": 1.0})
    loaded, metadata = base_model.load_model(path, trained.data)
    assert metadata["task"] == "flares"
    x = torch.from_numpy(trained.data.test.x[:16])
    assert torch.equal(loaded(x), trained.model.eval()(x))


def test_cached_base_model_trains_once_then_reuses_the_file(quick_flares):
    first = base_model.cached_base_model("flares", seed=3)
    second = base_model.cached_base_model("flares", seed=3)
    assert first.path == second.path and first.path.is_file()
    assert first.metrics == second.metrics
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_unreadable_and_unsafe_model_files_are_refused(tmp_path, blobs):
    missing = tmp_path / "missing.pt"
    with pytest.raises(base_model.ModelFileError, match="does not exist"):
        base_model.load_model(missing, blobs)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(base_model.ModelFileError, match="is not a PyTorch file"):
        base_model.load_model(garbage, blobs)
    # A pickle that would run code when unpickled is refused by the weights-only loader.
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": base_model.MODEL_FORMAT, "payload": pickle.loads}, unsafe)
    with pytest.raises(base_model.ModelFileError, match="holds pickled Python objects.*refuses"):
        base_model.load_model(unsafe, blobs)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(base_model.ModelFileError, match="is not a satcompress-model"):
        base_model.load_model(foreign, blobs)
