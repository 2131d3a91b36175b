"""Train, save, cache and load a reference task's base model.

A model file is a ``torch.save`` of plain data: the state dict plus a metadata dict naming
the task and the builder arguments, so it loads with ``torch.load(weights_only=True)`` (no
code from the file is ever run) and the architecture is rebuilt from the task registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pooch
import torch
from torch import nn

from satcompress.data import CACHE_DIR_VARIABLE
from satcompress.fileio import atomic_write_bytes
from satcompress.tasks.base import TaskData
from satcompress.tasks.registry import ReferenceTask, get_task
from satcompress.training import TrainConfig, fit

__all__ = [
    "MODEL_FORMAT",
    "ModelFileError",
    "TrainedModel",
    "save_model",
    "read_weights_only",
    "load_model",
    "model_from_saved",
    "train_base_model",
    "cached_base_model",
]

MODEL_FORMAT = "satcompress-model/1"
BASE_MODEL_VERSION = 3  # bump when training or architecture code changes cached results


class ModelFileError(ValueError):
    """A model file cannot be read or does not describe a satcompress model."""


@dataclass(frozen=True)
class TrainedModel:
    """A trained model with its task, data splits, test metrics and where it is stored."""

    task: ReferenceTask
    model: nn.Module
    data: TaskData
    metrics: dict[str, float]
    path: Path | None = None


def save_model(model: nn.Module, path: str | os.PathLike, metadata: dict) -> Path:
    """Atomically save ``model``'s state dict and JSON-able ``metadata`` (task, builder args)."""
    json.dumps(metadata)  # fail here, not at load time, on metadata that is not plain data
    buffer = io.BytesIO()
    torch.save({"format": MODEL_FORMAT, "metadata": metadata, "state_dict": model.state_dict()}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_weights_only(path: str | os.PathLike, advice: str) -> Any:
    """``torch.load(path, weights_only=True)``: plain data and tensors, never code.

    Raises
    ------
    ModelFileError
        If the file cannot be read so (a pickled module, a corrupt file), with ``advice``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(
            f"Cannot read model file {path} as weights only ({type(error).__name__}: "
            f"{str(error)[:200]}). {advice}"
        ) from None


def load_model(path: str | os.PathLike, data: TaskData) -> tuple[nn.Module, dict]:
    """Rebuild a saved model for ``data`` without running code from the file.

    Raises
    ------
    ModelFileError
        If the file is missing, unreadable, not a satcompress model, or its weights do not
        fit the architecture its metadata names.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist; train one with `satcompress train`.")
    content = read_weights_only(
        path, "satcompress loads only weights-only files it wrote (`satcompress train`); export "
        "other models as a state dict with torch.save(model.state_dict(), ...).")
    if not isinstance(content, dict) or content.get("format") != MODEL_FORMAT:
        raise ModelFileError(
            f"{path} is not a {MODEL_FORMAT} file (no 'format' entry); re-save it with "
            "satcompress.pipeline.base_model.save_model."
        )
    return model_from_saved(content, data, path)


def model_from_saved(content: dict, data: TaskData, path: str | os.PathLike
                     ) -> tuple[nn.Module, dict]:
    """The model a :data:`MODEL_FORMAT` file's content (already read) describes, for ``data``.

    Raises
    ------
    ModelFileError
        If the weights do not fit the architecture the metadata names (``path`` is named).
    """
    metadata = content["metadata"]
    task = get_task(metadata["task"])
    model = task.build_model(data, metadata["width_multiplier"], metadata["depth_multiplier"])
    try:
        model.load_state_dict(content["state_dict"])
    except RuntimeError as error:
        raise ModelFileError(
            f"The weights in {path} do not fit the {metadata['task']} architecture: "
            f"{str(error)[:300]}"
        ) from None
    model.eval()
    return model, metadata


def train_base_model(
    task_name: str,
    seed: int = 0,
    train_config: TrainConfig | None = None,
    progress: bool = False,
    data: TaskData | None = None,
) -> TrainedModel:
    """Train the task's base model from scratch and score it on the test split."""
    task = get_task(task_name)
    data = task.load(seed=seed) if data is None else data
    config = train_config or TrainConfig(seed=seed, **task.train_settings)
    torch.manual_seed(config.seed)  # the initial weights are part of the run
    model = fit(task.build_model(data), data, config, description=f"{task.name} base model",
                progress=progress)
    return TrainedModel(task=task, model=model, data=data, metrics=task.evaluate(model, data))


def _cache_key(task: ReferenceTask, seed: int) -> str:
    recipe = {"task": task.name, "seed": seed, "builder": task.model_builder,
              "train": task.train_settings, "version": BASE_MODEL_VERSION,
              "preprocessing": task.preprocessing_version, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cached_base_model(task_name: str, seed: int = 0, progress: bool = False) -> TrainedModel:
    """The task's base model from the cache, training and caching it first if needed.

    The cache file's name hashes the task, seed, training settings and code version, so a
    change to any of them trains a new model instead of reusing a stale one.
    """
    task = get_task(task_name)
    cache_dir = Path(os.environ.get(CACHE_DIR_VARIABLE) or pooch.os_cache("satcompress"))
    path = cache_dir / "models" / f"{task.name}-seed{seed}-{_cache_key(task, seed)}.pt"
    data = task.load(seed=seed)
    if path.is_file():
        model, _ = load_model(path, data)
        return TrainedModel(task, model, data, task.evaluate(model, data), path)
    trained = train_base_model(task_name, seed, progress=progress, data=data)
    metadata = {"task": task.name, "seed": seed, "width_multiplier": 1.0,
                "depth_multiplier": 1.0, "metrics": trained.metrics}
    save_model(trained.model, path, metadata)
    return TrainedModel(task, trained.model, data, trained.metrics, path)
