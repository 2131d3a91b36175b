"""Train, save, cache and load a reference task's base model.

A model file is a ``torch.save`` of plain data: the state dict plus a metadata dict naming
the task and the builder arguments, so it loads with ``torch.load(weights_only=True)`` (no
code from the file is ever run) and the architecture is rebuilt from the task registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pooch
import torch
from torch import nn

from satcompress.data import CACHE_DIR_VARIABLE
from satcompress.fileio import atomic_write_bytes
from satcompress.networks.architectures import check_weights, load_weights
from satcompress.tasks.base import TaskData
from satcompress.tasks.registry import Task, get_task
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
    "stored_base_model",
]

MODEL_FORMAT = "satcompress-model/1"
BASE_MODEL_VERSION = 3  # bump when training or architecture code changes cached results


class ModelFileError(ValueError):
    """A model file cannot be read or does not describe a satcompress model."""


@dataclass(frozen=True)
class TrainedModel:
    """A trained model with its task, data splits, test metrics and where it is stored."""

    task: Task
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


def _unreadable(path: Path, error: Exception, advice: str) -> str:
    """Why ``torch.load(weights_only=True)`` could not read ``path``, in the words that fit."""
    size = path.stat().st_size
    if size == 0:
        return f"Model file {path} is empty (0 bytes); save the model again."
    with open(path, "rb") as stream:
        start = stream.read(4)
    if start == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError):
            damaged = "the archive's directory"
        if damaged is not None:
            return (f"Model file {path} is truncated or damaged ({damaged} cannot be read); "
                    "copy or save it again.")
    elif not start.startswith(b"\x80"):  # neither torch's zip format nor a legacy pickle
        return (f"{path} is not a PyTorch file (it starts with {start!r}); pass a file written "
                "by torch.save.")
    if isinstance(error, pickle.UnpicklingError) and "global" in str(error).lower():
        return (f"Model file {path} holds pickled Python objects (most likely a whole nn.Module), "
                f"which would run code when loaded, so satcompress refuses it. {advice}")
    return (f"Cannot read model file {path} as weights only ({type(error).__name__}: "
            f"{str(error)[:200]}). {advice}")


def read_weights_only(path: str | os.PathLike, advice: str) -> Any:
    """``torch.load(path, weights_only=True)``: plain data and tensors, never code.

    Raises
    ------
    ModelFileError
        If the file cannot be read so, saying whether it is empty, truncated, not a PyTorch
        file or a pickled module, with ``advice``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(_unreadable(Path(path), error, advice)) from None


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


def _checked_metadata(content: dict, path: str | os.PathLike) -> dict:
    """The metadata of a :data:`MODEL_FORMAT` file, each field checked."""
    metadata, weights = content.get("metadata"), content.get("state_dict")
    if not isinstance(metadata, dict) or not isinstance(weights, dict):
        raise ModelFileError(f"{path} has no 'metadata' and 'state_dict' dicts; re-save it "
                             "with `satcompress train`.")
    for key in ("width_multiplier", "depth_multiplier"):
        value = metadata.get(key)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and value > 0):
            raise ModelFileError(f"{path}: metadata {key!r} is {value!r}; it must be a positive "
                                 "finite number. Re-save the model with `satcompress train`.")
    if not isinstance(metadata.get("task"), str):
        raise ModelFileError(f"{path}: metadata names no task; re-save it with `satcompress train`.")
    return metadata


def model_from_saved(content: dict, data: TaskData, path: str | os.PathLike
                     ) -> tuple[nn.Module, dict]:
    """The model a :data:`MODEL_FORMAT` file's content (already read) describes, for ``data``.

    The architecture is first built on PyTorch's ``meta`` device (no memory) and its shapes
    compared with the file's weights, so metadata cannot make it allocate more than the
    file holds.

    Raises
    ------
    ModelFileError
        If the metadata is bad or the weights do not fit the architecture it names (``path``
        is named).
    """
    metadata = _checked_metadata(content, path)
    weights = content["state_dict"]
    try:
        check_weights(weights)
        task = get_task(metadata["task"])
        with torch.device("meta"):
            skeleton = task.build_model(data, metadata["width_multiplier"],
                                        metadata["depth_multiplier"])
        shapes = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
        given = {name: tuple(getattr(tensor, "shape", ())) for name, tensor in weights.items()}
        if shapes != given:
            wrong = sorted(set(shapes.items()) ^ set(given.items()))[0][0]
            raise ValueError(f"the tensor {wrong!r} is missing, unexpected or of another shape "
                             f"({given.get(wrong)} in the file, {shapes.get(wrong)} expected)")
        model = task.build_model(data, metadata["width_multiplier"], metadata["depth_multiplier"])
        load_weights(model, weights, metadata["task"])
    except (ValueError, RuntimeError) as error:
        raise ModelFileError(f"The model in {path} cannot be rebuilt: {str(error)[:400]}") from None
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


def _cache_key(task: Task, seed: int, split: dict) -> str:
    recipe = {"task": task.name, "seed": seed, "builder": task.model_builder,
              "train": task.train_settings, "version": BASE_MODEL_VERSION,
              "preprocessing": task.preprocessing_version, "torch": torch.__version__,
              **split}  # no split options: the default split's key stays what it was
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cached_base_model(
    task_name: str,
    seed: int = 0,
    progress: bool = False,
    *,
    fold: int | None = None,
    n_folds: int = 5,
) -> TrainedModel:
    """The task's base model from the cache, training and caching it first if needed.

    The cache file's name hashes the task, seed, training settings and code version, so a
    change to any of them trains a new model instead of reusing a stale one. With ``fold``,
    the data are that fold of ``n_folds`` grouped folds (the task's ``load(fold=...)``) and the
    model is trained and cached for it; without, the task's default split.
    """
    task = get_task(task_name)
    cache_dir = Path(os.environ.get(CACHE_DIR_VARIABLE) or pooch.os_cache("satcompress"))
    split = {} if fold is None else {"fold": fold, "n_folds": n_folds}
    name = task.name + f"-seed{seed}" + (f"-fold{fold}of{n_folds}" if split else "")
    path = cache_dir / "models" / f"{name}-{_cache_key(task, seed, split)}.pt"
    return stored_base_model(path, task_name, seed, task.load(seed=seed, **split), progress,
                             **split)


def stored_base_model(path: str | os.PathLike, task_name: str, seed: int, data: TaskData,
                      progress: bool = False, **metadata: Any) -> TrainedModel:
    """The task's base model for ``data``: read from ``path`` if the file is there, else
    trained on ``data`` (:func:`train_base_model`) and written there with ``metadata``."""
    path = Path(path)
    task = get_task(task_name)
    if path.is_file():
        model, _ = load_model(path, data)
        return TrainedModel(task, model, data, task.evaluate(model, data), path)
    trained = train_base_model(task_name, seed, progress=progress, data=data)
    save_model(trained.model, path, {"task": task.name, "seed": seed, "width_multiplier": 1.0,
                                     "depth_multiplier": 1.0, "metrics": trained.metrics,
                                     **metadata})
    return TrainedModel(task, trained.model, data, trained.metrics, path)
