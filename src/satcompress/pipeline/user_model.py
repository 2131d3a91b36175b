"""A user's own trained model and data, ready for a recipe: the ``--model/--data`` path.

A model comes in one of these ways; none runs code from a file unless the user says so:

* **in Python**, any ``nn.Module`` (:func:`prepare_user_model`; :func:`satcompress.compress`);
* **the user's own code**: ``--model package.module:function`` names a function returning the
  (untrained) model, imported like ``uvicorn app:app`` -- explicitly the user's code, from the
  current folder or the installed packages -- and ``--weights state_dict.pt`` its trained
  weights (``torch.save(model.state_dict(), path)``, read with ``torch.load(weights_only=True)``);
* a **state dict** file plus a named reference architecture
  (:data:`satcompress.networks.architectures.ARCHITECTURES`) sized from the weights, or a
  **satcompress model file** (``satcompress train``), which names its own architecture.

Weights must be real, finite floating point
(:func:`satcompress.networks.architectures.check_weights`).

A **TorchScript** archive (``torch.jit.save``) is a program, and ``torch.export.load`` of an
**exported program** (``.pt2``) may unpickle: loading either runs code the file holds. Both are
refused unless the caller says the file's code may run (``run_code_in_model_file=True``, CLI
``--run-code-in-model-file``; for files you wrote yourself). Then their weights are placed into
the named architecture (or the model ``--model package.module:function`` builds), and the
rebuilt model must reproduce the file's own graph on the validation inputs (same outputs to
1e-4), so a mismatched architecture is caught instead of silently compressed.

Compression restructures layers (removes channels, replaces weights by clusters, ...), which a
compiled graph does not expose; hence the model's own code or a named architecture in every
case. A file holding a whole pickled ``nn.Module`` (``torch.save(model, path)``) would run
arbitrary code when unpickled and is refused, with the one-line fix.

The model gets the data's inputs as they are; a model trained on standardised tabular
features gets its standardisation as a first layer (``standardize=True``,
:func:`satcompress.networks.standardized`), so the flight artifact takes the raw features.

Example
-------
>>> trained = user_trained_model("mypackage.models:build", "data.csv", weights="model.pt",
...                              metric="tss", split_column="split")      # doctest: +SKIP
>>> run_recipe(trained, Recipe.load("general"), Budget.parse("max_bytes=40kB"), "out")
...                                                                    # doctest: +SKIP
"""

from __future__ import annotations

import copy
import importlib
import re
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from satcompress.networks import standardized
from satcompress.onnx_export import OnnxExportError
from satcompress.pipeline.checkpoint import weights_sha256
from satcompress.pipeline.flight import flight_graph
from satcompress.networks.architectures import ARCHITECTURES, check_weights, model_from_state_dict
from satcompress.pipeline.base_model import (
    MODEL_FORMAT,
    ModelFileError,
    TrainedModel,
    model_from_saved,
    read_weights_only,
)
from satcompress.tasks import user
from satcompress.tasks.base import TaskData

__all__ = ["FACTORY_PATTERN", "is_factory", "factory_model", "load_user_model",
           "prepare_user_model", "user_trained_model"]

FACTORY_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
"""``package.module:function``: the user's own code building the model (``--model``)."""
_SAFE_EXPORT = (
    "Save the weights instead: torch.save(model.state_dict(), 'model.pt'), and pass your "
    "model's code as --model package.module:function with --weights model.pt (or --architecture "
    "NAME for a reference architecture: " + ", ".join(sorted(ARCHITECTURES)) + ")."
)
_REPRODUCTION_TOLERANCE = 1e-4
_RUNS_CODE = (
    "{path} is a {kind}: loading it runs code the file holds, so satcompress refuses it. "
    + _SAFE_EXPORT + " Only for a file you wrote yourself: pass --run-code-in-model-file "
    "(Python: run_code_in_model_file=True)."
)


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


def is_factory(spec: str | Path) -> bool:
    """Whether ``--model`` names the user's code (``package.module:function``), not a file."""
    text = str(spec)
    return bool(FACTORY_PATTERN.fullmatch(text)) and not Path(text).exists()


def factory_model(spec: str) -> nn.Module:
    """The untrained model the user's ``package.module:function`` builds (their own code)."""
    module_name, attribute = spec.split(":")
    if "" not in sys.path and "." not in sys.path:  # the current folder, as `python -m` has it
        sys.path.insert(0, "")
    try:
        factory = importlib.import_module(module_name)
        for name in attribute.split("."):
            factory = getattr(factory, name)
    except ImportError as error:
        raise ModelFileError(f"Cannot import {module_name!r} for --model {spec} ({error}); run "
                             "from the folder holding it or install its package.") from None
    except AttributeError:
        raise ModelFileError(f"{module_name!r} has no {attribute!r} (--model {spec}).") from None
    model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise ModelFileError(f"--model {spec} gave a {type(model).__name__}, not an nn.Module; "
                             "name a function that returns your (untrained) model.")
    return model


def _with_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str
                  ) -> nn.Module:
    """``model`` holding ``state_dict`` (every tensor, by name and shape), weights checked."""
    try:
        check_weights(state_dict)
    except ValueError as error:
        raise ModelFileError(f"{where}: {error}") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ModelFileError(
            f"{where} does not fit the model: "
            + "; ".join(part for part in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "") if part)
            + ". Save the weights of the model this --model function builds.")
    wrong = [name for name, tensor in own.items() if tuple(tensor.shape) !=
             tuple(state_dict[name].shape)]
    if wrong:
        raise ModelFileError(f"{where}: tensor {wrong[0]!r} has shape "
                             f"{tuple(state_dict[wrong[0]].shape)}, the model's is "
                             f"{tuple(own[wrong[0]].shape)}.")
    model.load_state_dict(state_dict)
    return model


def _compiled_model(path: Path, kind: str, architecture: str | None, n_heads: int,
                    x: np.ndarray, factory: str | None) -> nn.Module:
    if architecture is None and factory is None:
        raise ModelFileError(
            f"{path} is a {kind.replace('_', ' ')}: satcompress reads its weights but must "
            "restructure its layers, which a compiled graph does not expose. Give your model's "
            "code as --model package.module:function with --weights FILE, or name a reference "
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
    if factory is not None:
        rebuilt = _with_weights(factory_model(factory), state_dict, str(path))
    else:
        rebuilt = _from_weights(state_dict, architecture, n_heads, path)
    _check_reproduces(rebuilt, reference, x, batch_size, path, architecture or factory)
    return rebuilt


def _from_weights(state_dict: Mapping[str, torch.Tensor], architecture: str | None,
                  n_heads: int, path: Path) -> nn.Module:
    if architecture is None:
        raise ModelFileError(f"{path} holds a state dict; give your model's code as --model "
                             "package.module:function with --weights FILE (or name a reference "
                             f"architecture with --architecture: {', '.join(sorted(ARCHITECTURES))}).")
    try:
        return model_from_state_dict(architecture, state_dict, n_heads)
    except ValueError as error:
        raise ModelFileError(f"{path}: {error}") from None


def load_user_model(
    model: str | Path,
    data: TaskData,
    architecture: str | None = None,
    n_heads: int = 4,
    *,
    weights: str | Path | None = None,
    run_code_in_model_file: bool = False,
) -> nn.Module:
    """A user's trained model (see module notes); no file's code runs unless allowed.

    Parameters
    ----------
    model : str or path
        ``package.module:function`` (the user's code; ``weights`` holds its trained state
        dict), or a state dict, satcompress model file, TorchScript archive or exported
        program (``.pt2``).
    data : TaskData
        The user's data: the model must take its inputs and give one logit per class.
    architecture : str, optional
        Name in :data:`~satcompress.networks.architectures.ARCHITECTURES` for a state dict
        or compiled file without ``package.module:function``.
    n_heads : int
        Attention heads of a ``t2`` (not visible in its weights).
    weights : path, optional
        The trained weights of a ``package.module:function`` model: a state dict file, or a
        TorchScript / exported program whose weights are taken (with
        ``run_code_in_model_file``).
    run_code_in_model_file : bool
        Accept a TorchScript archive or exported program, whose loading runs code the file
        holds (default: refuse them).

    Raises
    ------
    ModelFileError
        If the file is missing, empty, truncated, a pickled module or compiled code (refused),
        unreadable, holds non-finite or non-float weights, or its weights do not fit (or
        reproduce) the model or the data's shapes.
    """
    factory = str(model) if is_factory(model) else None
    if factory is not None and weights is None:
        raise ModelFileError(f"--model {factory} builds an untrained model; give its trained "
                             "weights with --weights FILE (torch.save(model.state_dict(), FILE)).")
    if factory is None and weights is not None:
        raise ModelFileError("--weights goes with --model package.module:function (your model's "
                             f"code); {model} is a file.")
    path = Path(weights if factory is not None else model)
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    kind = _archive_kind(path)
    if kind != "torch_save" and not run_code_in_model_file:
        raise ModelFileError(_RUNS_CODE.format(path=path, kind=kind.replace("_", " ")))
    if kind != "torch_save":
        built = _compiled_model(path, kind, architecture, n_heads, data.val.x[:64], factory)
    else:
        content = read_weights_only(path, _SAFE_EXPORT)
        if isinstance(content, dict) and content.get("format") == MODEL_FORMAT and not factory:
            built, _ = model_from_saved(content, data, path)
        elif isinstance(content, Mapping) and all(
                isinstance(value, torch.Tensor) for value in content.values()):
            built = (_with_weights(factory_model(factory), content, str(path)) if factory
                     else _from_weights(content, architecture, n_heads, path))
        else:
            raise ModelFileError(f"{path} holds a {type(content).__name__}, not a state dict of "
                                 f"tensors. {_SAFE_EXPORT}")
    _check_fits_data(built.eval(), data, str(path))
    return built


def _check_fits_data(model: nn.Module, data: TaskData, where: str) -> None:
    try:
        with torch.inference_mode():
            logits = model(torch.from_numpy(data.val.x[:2]))
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise ModelFileError(f"The model {where} cannot take the data's inputs of shape "
                             f"{data.input_shape}: {str(error)[:300]}") from None
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (
            min(2, len(data.val)), data.n_classes):
        shape = tuple(logits.shape[1:]) if isinstance(logits, torch.Tensor) else type(logits)
        raise ModelFileError(
            f"The model {where} gives outputs of {shape} per example; the data has "
            f"{data.n_classes} classes ({', '.join(data.class_names)}): it must return one "
            "tensor of one logit per class (no softmax)."
        )
    if not bool(torch.isfinite(logits).all()):
        raise ModelFileError(f"The model {where} gives non-finite outputs (inf or NaN) on the "
                             "data's first validation examples: check that the weights and the "
                             "data are the ones it was trained with.")


def prepare_user_model(
    model: nn.Module,
    data: TaskData,
    *,
    metric: str = "accuracy",
    standardize: bool = False,
    description: str = "your model on your data",
    path: Path | None = None,
) -> TrainedModel:
    """A user's model (any ``nn.Module``, not modified) and data as the :class:`TrainedModel`
    a recipe runs on, judged by ``metric``.

    ``standardize`` puts the training split's per-feature standardisation in front of a copy
    of the model (for a model trained on standardised features; the artifact then takes raw
    ones). The model is exported once here, so one that the flight runtime cannot run (an
    operator it lacks, named with its layer) is refused before any compression time is spent.
    The task's name hashes the weights and the data, so a resumed run never reuses
    checkpoints made from another model or dataset.
    """
    if not isinstance(model, nn.Module):
        raise ModelFileError(f"The model must be a torch.nn.Module; got a {type(model).__name__}.")
    model = copy.deepcopy(model).eval()
    if standardize:
        model = standardized(model, data.train.x).eval()
    _check_fits_data(model, data, "given" if path is None else f"in {path}")
    try:  # an operator the runtime lacks is refused now, not after compression
        flight_graph(model, torch.from_numpy(data.val.x[:1]))
    except OnnxExportError as error:
        raise ModelFileError(f"The model cannot become a flight artifact: {error}") from None
    identity = weights_sha256(model)[:8] + str(data.preprocessing.get("sha256", ""))[:8]
    task = user.user_task(data, metric, name=f"user-{identity}", description=description)
    return TrainedModel(task, model, data, task.evaluate(model, data), path)


def user_trained_model(
    model: str | Path,
    data_path: str | Path,
    *,
    weights: str | Path | None = None,
    architecture: str | None = None,
    metric: str = "accuracy",
    label_column: str = "label",
    group_column: str | None = None,
    split_column: str | None = None,
    val_path: str | Path | None = None,
    test_path: str | Path | None = None,
    survey: str = "ztf",
    standardize: bool = False,
    n_heads: int = 4,
    seed: int = 0,
    run_code_in_model_file: bool = False,
) -> TrainedModel:
    """A user's model and data files as the :class:`TrainedModel` a recipe runs on.

    See :func:`load_user_model`, :func:`prepare_user_model` and
    :func:`satcompress.tasks.user.read_user_data` for the arguments.
    """
    data = user.read_user_data(data_path, label_column=label_column, group_column=group_column,
                               split_column=split_column, val_path=val_path,
                               test_path=test_path, survey=survey, seed=seed)
    loaded = load_user_model(model, data, architecture, n_heads, weights=weights,
                             run_code_in_model_file=run_code_in_model_file)
    description = f"{Path(str(weights or model)).name} on {Path(data_path).name}"
    return prepare_user_model(loaded, data, metric=metric, standardize=standardize,
                              description=description, path=Path(weights or model))
