"""A user's own trained model and data, ready for a recipe: the ``--model/--data`` path.

By default the model file is read without running code from it:

* a **state dict** (``torch.save(model.state_dict(), path)``), read with
  ``torch.load(weights_only=True)``, plus a named architecture
  (:data:`satcompress.networks.architectures.ARCHITECTURES`) sized from the weights;
* a **satcompress model file** (``satcompress train``), which names its own architecture.

Its weights must be real, finite floating point
(:func:`satcompress.networks.architectures.check_weights`).

A **TorchScript** archive (``torch.jit.save``) is a program, and ``torch.export.load`` of an
**exported program** may unpickle: loading either runs code the file holds. Both are refused
unless the caller says the file's code may run (``run_code_in_model_file=True``, CLI
``--run-code-in-model-file``; for files you wrote yourself). Then their weights are placed into
the named architecture, and the rebuilt model must reproduce the file's own graph on the
validation inputs (same outputs to 1e-4), so a mismatched architecture is caught instead of
silently compressed.

Compression restructures layers (removes channels, replaces weights by clusters, ...), which a
compiled graph does not expose; hence the named architecture in every case. A file holding a
whole pickled ``nn.Module`` (``torch.save(model, path)``) would run arbitrary code when
unpickled and is refused, with the one-line fix.

Example
-------
>>> trained = user_trained_model("model.pt", "data.csv", architecture="residual_mlp",
...                              metric="tss")                        # doctest: +SKIP
>>> budget = Budget.parse("max_bytes=40kB")                            # doctest: +SKIP
>>> run_recipe(trained, Recipe.load("assembled"), budget, "out")       # doctest: +SKIP
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from satcompress.fileio import file_sha256
from satcompress.networks.architectures import ARCHITECTURES, model_from_state_dict
from satcompress.pipeline.base_model import (
    MODEL_FORMAT,
    ModelFileError,
    TrainedModel,
    model_from_saved,
    read_weights_only,
)
from satcompress.tasks import user
from satcompress.tasks.base import TaskData
from satcompress.tasks.registry import ReferenceTask

__all__ = ["UserTask", "load_user_model", "user_trained_model"]

_SAFE_EXPORT = (
    "Save the weights instead: torch.save(model.state_dict(), 'model.pt') and pass "
    "--architecture NAME (one of: " + ", ".join(sorted(ARCHITECTURES)) + ")."
)
_REPRODUCTION_TOLERANCE = 1e-4
_RUNS_CODE = (
    "{path} is a {kind}: loading it runs code the file holds, so satcompress refuses it. "
    + _SAFE_EXPORT + " Only for a file you wrote yourself: pass --run-code-in-model-file "
    "(Python: run_code_in_model_file=True)."
)


@dataclass(frozen=True)
class UserTask(ReferenceTask):
    """A user's dataset dressed as a task: its splits, and the metric it is judged by."""

    metric: str = "accuracy"
    data: TaskData | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.metric not in user.METRICS:
            raise ValueError(f"Unknown metric {self.metric!r}; choose from "
                             f"{', '.join(sorted(user.METRICS))}.")
        if self.metric == "tss" and self.data is not None and self.data.n_classes != 2:
            raise ValueError(f"The metric tss needs two classes; the data has "
                             f"{self.data.n_classes}. Choose accuracy, macro_f1 or "
                             "weighted_log_loss.")

    @property
    def primary_metric(self) -> str:
        return self.metric

    @property
    def higher_is_better(self) -> bool:
        return user.METRICS[self.metric]

    def load(self, seed: int = 0, **options: object) -> TaskData:
        """The user's splits (read once, with the seed given to :func:`user_trained_model`)."""
        return self.data

    def build_model(self, data: TaskData, width_multiplier: float = 1.0,
                    depth_multiplier: float = 1.0) -> nn.Module:
        raise ValueError("A user task has no architecture of its own to build: the user's "
                         "model is the base model.")

    def score(self, val_probabilities: np.ndarray, val_labels: np.ndarray,
              test_probabilities: np.ndarray, test_labels: np.ndarray) -> dict[str, float]:
        return user.score(self.metric, val_probabilities, val_labels, test_probabilities,
                          test_labels)


def _archive_kind(path: Path) -> str:
    """``torchscript``, ``exported_program`` or ``torch_save`` from the zip's member names."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return "torch_save"  # the legacy (non-zip) torch.save format
    if any(name.endswith("models/model.json") or name.endswith("serialized_exported_program.json")
           for name in names):
        return "exported_program"
    if any("/code/" in name for name in names):
        return "torchscript"
    return "torch_save"


def _check_reproduces(rebuilt: nn.Module, reference: nn.Module, x: np.ndarray, batch_size: int,
                      path: Path, architecture: str) -> None:
    """Compare on whole batches of ``batch_size`` (an exported program may fix its batch)."""
    inputs = torch.from_numpy(x[: max(batch_size, len(x) // batch_size * batch_size)])
    with torch.inference_mode():
        expected = torch.cat([reference(chunk) for chunk in inputs.split(batch_size)])
        actual = rebuilt(inputs)
    difference = float((expected - actual).abs().max())
    if not difference <= _REPRODUCTION_TOLERANCE * max(1.0, float(expected.abs().max())):
        raise ModelFileError(
            f"The weights of {path} placed into a {architecture} do not reproduce the file's own "
            f"outputs (largest difference {difference:.3g}): the model is not a {architecture} "
            "of this shape (check --architecture and --n-heads)."
        )


def _compiled_model(path: Path, kind: str, architecture: str | None, n_heads: int,
                    x: np.ndarray) -> nn.Module:
    if architecture is None:
        raise ModelFileError(
            f"{path} is a {kind.replace('_', ' ')}: satcompress reads its weights but must "
            "restructure its layers, which a compiled graph does not expose. Name the "
            f"architecture with --architecture (one of: {', '.join(sorted(ARCHITECTURES))})."
        )
    try:
        batch_size = len(x)
        if kind == "torchscript":
            with warnings.catch_warnings():  # deprecated in PyTorch, still what users have
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated",
                                        DeprecationWarning)
                reference = torch.jit.load(str(path), map_location="cpu").eval()
            state_dict = reference.state_dict()
        else:
            program = torch.export.load(str(path))
            reference, state_dict = program.module(), program.state_dict
            batch_size = int(program.example_inputs[0][0].shape[0])
    except Exception as error:
        raise ModelFileError(f"Cannot read {path} as a {kind.replace('_', ' ')} "
                             f"({type(error).__name__}: {str(error)[:200]}).") from None
    rebuilt = _from_weights(state_dict, architecture, n_heads, path)
    _check_reproduces(rebuilt, reference, x, batch_size, path, architecture)
    return rebuilt


def _from_weights(state_dict: Mapping[str, torch.Tensor], architecture: str | None,
                  n_heads: int, path: Path) -> nn.Module:
    if architecture is None:
        raise ModelFileError(f"{path} holds a state dict; name its architecture with "
                             f"--architecture (one of: {', '.join(sorted(ARCHITECTURES))}).")
    try:
        return model_from_state_dict(architecture, state_dict, n_heads)
    except ValueError as error:
        raise ModelFileError(f"{path}: {error}") from None


def load_user_model(
    path: str | Path,
    data: TaskData,
    architecture: str | None = None,
    n_heads: int = 4,
    *,
    run_code_in_model_file: bool = False,
) -> nn.Module:
    """A user's trained model, read without running code from the file (see module notes).

    Parameters
    ----------
    path : path
        A state dict, satcompress model file, TorchScript archive or exported program.
    data : TaskData
        The user's data: the model must take its inputs and give one logit per class.
    architecture : str, optional
        Name in :data:`~satcompress.networks.architectures.ARCHITECTURES`; needed by every
        format except satcompress's own model file.
    n_heads : int
        Attention heads of a ``t2`` (not visible in its weights).
    run_code_in_model_file : bool
        Accept a TorchScript archive or exported program, whose loading runs code the file
        holds (default: refuse them).

    Raises
    ------
    ModelFileError
        If the file is missing, empty, truncated, a pickled module or compiled code (refused),
        unreadable, holds non-finite or non-float weights, or its weights do not fit (or
        reproduce) the named architecture or the data's shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    kind = _archive_kind(path)
    if kind != "torch_save" and not run_code_in_model_file:
        raise ModelFileError(_RUNS_CODE.format(path=path, kind=kind.replace("_", " ")))
    if kind != "torch_save":
        model = _compiled_model(path, kind, architecture, n_heads, data.val.x[:64])
    else:
        content = read_weights_only(path, _SAFE_EXPORT)
        if isinstance(content, dict) and content.get("format") == MODEL_FORMAT:
            model, _ = model_from_saved(content, data, path)
        elif isinstance(content, Mapping) and all(
                isinstance(value, torch.Tensor) for value in content.values()):
            model = _from_weights(content, architecture, n_heads, path)
        else:
            raise ModelFileError(f"{path} holds a {type(content).__name__}, not a state dict of "
                                 f"tensors. {_SAFE_EXPORT}")
    _check_fits_data(model.eval(), data, path)
    return model


def _check_fits_data(model: nn.Module, data: TaskData, path: Path) -> None:
    try:
        with torch.inference_mode():
            logits = model(torch.from_numpy(data.val.x[:2]))
    except (RuntimeError, ValueError) as error:
        raise ModelFileError(f"The model in {path} cannot take the data's inputs of shape "
                             f"{data.input_shape}: {str(error)[:300]}") from None
    if tuple(logits.shape) != (min(2, len(data.val)), data.n_classes):
        raise ModelFileError(
            f"The model in {path} gives outputs of shape {tuple(logits.shape[1:])} per example; "
            f"the data has {data.n_classes} classes ({', '.join(data.class_names)}): it must "
            "return one logit per class."
        )
    if not bool(torch.isfinite(logits).all()):
        raise ModelFileError(f"The model in {path} gives non-finite outputs (inf or NaN) on the "
                             "data's first validation examples: check that the weights and the "
                             "data are the ones it was trained with.")


def user_trained_model(
    model_path: str | Path,
    data_path: str | Path,
    *,
    architecture: str | None = None,
    metric: str = "accuracy",
    label_column: str = "label",
    group_column: str | None = None,
    n_heads: int = 4,
    seed: int = 0,
    run_code_in_model_file: bool = False,
) -> TrainedModel:
    """A user's model and data as the :class:`TrainedModel` a recipe runs on.

    The task's name hashes both files, so a resumed run never reuses checkpoints made from
    another model or dataset. See :func:`load_user_model` and
    :func:`satcompress.tasks.user.read_user_data` for the arguments.
    """
    data = user.read_user_data(data_path, label_column=label_column,
                               group_column=group_column, seed=seed)
    model = load_user_model(model_path, data, architecture, n_heads,
                            run_code_in_model_file=run_code_in_model_file)
    identity = file_sha256(model_path)[:8] + data.preprocessing["sha256"][:8]
    task = UserTask(name=f"user-{identity}", description=f"{Path(model_path).name} on "
                    f"{Path(data_path).name}", module="satcompress.tasks.user",
                    model_builder="", train_settings={}, metric=metric, data=data)
    return TrainedModel(task, model, data, task.evaluate(model, data), Path(model_path))
