"""Stage checkpoints that hold tensors and plain JSON only: reading one never runs code.

A compressed model's structure changes from stage to stage (channels removed, layers
factorised, weights clustered or fake-quantized), so a state dict alone cannot rebuild it. A
checkpoint therefore records the module tree as plain data -- for every module its class
(one of an allow-list: PyTorch's ``torch.nn`` layers and satcompress's own), its plain
attributes (numbers, strings, tuples, dicts, dtypes; not the caches a class lists in its
``transient_attributes``), the names of its parameters, buffers
and children, and its parametrisations -- and stores all tensors in one state dict. The file
is ``torch.save`` of that plain data and is read with ``torch.load(weights_only=True)``; the
model is rebuilt by our own code from the recorded classes, never by unpickling. A file that
names any other class, or holds anything but this plain data, is refused with
:class:`CheckpointError`, whoever wrote it.

A user's own model is built from the user's classes (``mypackage.models:Net``). They are
accepted only as *trusted classes* the caller holds in memory -- the classes of the model it
was given (:func:`foreign_classes`) -- matched by name, never imported on the file's say.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "checkpoint_bytes", "foreign_classes",
           "model_from_checkpoint", "weights_sha256"]

CHECKPOINT_FORMAT = "satcompress-checkpoint/1"
_ALLOWED_PACKAGES = ("torch.nn.modules.", "satcompress.")
_MODULE_INTERNALS = frozenset(nn.Module().__dict__) - {"training"}
_HOOK_DICTS = tuple(name for name in _MODULE_INTERNALS if "hook" in name)
_MAX_DEPTH = 64


class CheckpointError(ValueError):
    """A checkpoint cannot be written (unsupported content) or read (not a checkpoint)."""


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of ``model``'s state dict (names and bytes, in order): the identity of its
    weights in task names and student keys."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def foreign_classes(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The classes of ``model``'s layers outside the allow-list (a user's own), to pass as
    ``trusted_classes`` when rebuilding its checkpoints."""
    found = {type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)
             for module in model.modules()}
    return tuple(sorted((cls for cls in found if not cls.__module__.startswith(_ALLOWED_PACKAGES)),
                        key=_class_name))


def _allowed_class(name: Any, trusted: Mapping[str, type] | None = None) -> type[nn.Module]:
    """The ``nn.Module`` subclass ``module:qualname`` names, if trusted or on the allow-list."""
    if trusted and isinstance(name, str) and name in trusted:
        return trusted[name]
    if not isinstance(name, str) or name.count(":") != 1:
        raise CheckpointError(f"module class {name!r} is not of the form 'package.module:Class'")
    module_name, qualname = name.split(":")
    if not module_name.startswith(_ALLOWED_PACKAGES) or not qualname.isidentifier():
        raise CheckpointError(f"module class {name!r} is not a torch.nn or satcompress layer "
                              "(nor a class of the model given)")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError):
        raise CheckpointError(f"module class {name!r} does not exist in this version") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"{name!r} is not an nn.Module class")
    return cls


def _encode(value: Any, where: str) -> Any:
    """A plain attribute as JSON-able data, tagging what JSON would lose (tuples, dtypes)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, (tuple, list)):
        items = [_encode(item, where) for item in value]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, Mapping) and all(isinstance(key, (str, int)) for key in value):
        return {"dict": [[key, _encode(item, where)] for key, item in value.items()]}
    raise CheckpointError(f"{where} is a {type(value).__name__}, which a checkpoint cannot "
                          "hold (plain numbers, strings, tuples, dicts with str or int keys and dtypes only)")


def _decode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode(item, where) for item in value]
    if isinstance(value, dict) and len(value) == 1:
        (tag, content), = value.items()
        if tag == "tuple" and isinstance(content, list):
            return tuple(_decode(item, where) for item in content)
        if tag == "dict" and isinstance(content, list) and all(
                isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))
                for pair in content):
            return {key: _decode(item, where) for key, item in content}
        if tag == "float" and content in ("inf", "-inf", "nan"):
            return float(content)
        if tag == "dtype" and isinstance(getattr(torch, str(content), None), torch.dtype):
            return getattr(torch, content)
    raise CheckpointError(f"{where} holds {value!r:.80}, which is not a checkpoint value")


def _describe(module: nn.Module, prefix: str, tensors: dict[str, torch.Tensor],
              seen: dict[int, str]) -> dict:
    """The plain-data description of ``module``; its tensors go into ``tensors``."""
    where = prefix.rstrip(".") or "the model"
    if any(getattr(module, hooks) for hooks in _HOOK_DICTS):
        raise CheckpointError(f"{where} has hooks registered; remove them before checkpointing")
    cls = type(module)
    entry: dict[str, Any] = {"parametrizations": {}}
    if parametrize.is_parametrized(module):
        cls = cls.__bases__[0]  # parametrize's generated subclass of the layer's class
        for name, chain in module.parametrizations.items():
            entry["parametrizations"][name] = {
                "original": _tensor_reference(chain.original, f"{prefix}{name}.original",
                                              tensors, seen),
                "modules": [_describe(step, f"{prefix}parametrizations.{name}.{i}.", tensors,
                                      seen) for i, step in enumerate(chain)],
            }
    entry["class"] = _class_name(cls)
    transient = getattr(cls, "transient_attributes", {})
    entry["attributes"] = {name: _encode(value, f"{where}.{name}")
                           for name, value in vars(module).items()
                           if name not in _MODULE_INTERNALS and name not in transient}
    entry["parameters"] = {name: None if value is None else _tensor_reference(
        value, prefix + name, tensors, seen) for name, value in module._parameters.items()}
    entry["buffers"] = {name: None if value is None else _tensor_reference(
        value, prefix + name, tensors, seen) for name, value in module._buffers.items()}
    entry["non_persistent_buffers"] = sorted(module._non_persistent_buffers_set)
    entry["children"] = {name: None if child is None else _describe(child, f"{prefix}{name}.",
                                                                    tensors, seen)
                         for name, child in module._modules.items()
                         if not (name == "parametrizations" and entry["parametrizations"])}
    return entry


def _tensor_reference(tensor: torch.Tensor, name: str, tensors: dict[str, torch.Tensor],
                      seen: dict[int, str]) -> dict:
    """Store ``tensor`` once (shared tensors stay shared) and refer to it by name."""
    key = seen.setdefault(id(tensor), name)
    if key == name:
        tensors[name] = tensor.detach().clone()  # a view would store its whole storage
    return {"tensor": key, "requires_grad": bool(tensor.requires_grad)}


def checkpoint_bytes(model: nn.Module) -> bytes:
    """``model`` as checkpoint file content (see the module notes).

    Raises
    ------
    CheckpointError
        If a layer is not an allow-listed class or holds an attribute that is not plain data.
    """
    tensors: dict[str, torch.Tensor] = {}
    structure = _describe(model, "", tensors, {})
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "structure": structure, "tensors": tensors}, buffer)
    return buffer.getvalue()


class _Builder:
    """Rebuilds a module tree from its description, checking every field it reads."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], trusted: Mapping[str, type]) -> None:
        self.tensors = dict(tensors)  # a stored tensor is replaced by its Parameter once made
        self.trusted = trusted

    def tensor(self, reference: Any, where: str, parameter: bool) -> torch.Tensor:
        if not (isinstance(reference, dict) and reference.keys() == {"tensor", "requires_grad"}
                and reference["tensor"] in self.tensors):
            raise CheckpointError(f"{where} does not refer to a stored tensor")
        name = reference["tensor"]
        tensor = self.tensors[name]
        if parameter and not isinstance(tensor, nn.Parameter):  # else: shared, made before
            tensor = self.tensors[name] = nn.Parameter(
                tensor, requires_grad=bool(reference["requires_grad"]))
        return tensor

    def module(self, entry: Any, where: str, depth: int = 0) -> nn.Module:
        fields = {"class", "attributes", "parameters", "buffers", "non_persistent_buffers",
                  "children", "parametrizations"}
        if not isinstance(entry, dict) or entry.keys() != fields:
            raise CheckpointError(f"{where}: not a module description")
        if depth > _MAX_DEPTH:
            raise CheckpointError(f"{where}: modules nested deeper than {_MAX_DEPTH}")
        cls = _allowed_class(entry["class"], self.trusted)
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        transient = getattr(cls, "transient_attributes", {})
        module.__dict__.update(transient)
        for name, value in self._named(entry["attributes"], where, "attributes"):
            if name in _MODULE_INTERNALS or name in transient or name.startswith("__"):
                raise CheckpointError(f"{where}: attribute {name!r} may not be set")
            module.__dict__[name] = _decode(value, f"{where}.{name}")
        for name, reference in self._named(entry["parameters"], where, "parameters"):
            module._parameters[name] = None if reference is None else self.tensor(
                reference, f"{where}.{name}", parameter=True)
        for name, reference in self._named(entry["buffers"], where, "buffers"):
            module._buffers[name] = None if reference is None else self.tensor(
                reference, f"{where}.{name}", parameter=False)
        persistent_off = entry["non_persistent_buffers"]
        if not (isinstance(persistent_off, list) and set(persistent_off) <= module._buffers.keys()):
            raise CheckpointError(f"{where}: non-persistent buffers are not among its buffers")
        module._non_persistent_buffers_set.update(persistent_off)
        for name, child in self._named(entry["children"], where, "children"):
            module._modules[name] = None if child is None else self.module(
                child, f"{where}.{name}", depth + 1)
        for name, chain in self._named(entry["parametrizations"], where, "parametrizations"):
            self.parametrize(module, name, chain, f"{where}.{name}", depth)
        return module

    def parametrize(self, module: nn.Module, name: str, chain: Any, where: str,
                    depth: int) -> None:
        if not (isinstance(chain, dict) and chain.keys() == {"original", "modules"}
                and isinstance(chain["modules"], list) and chain["modules"]):
            raise CheckpointError(f"{where}: not a parametrisation description")
        original = self.tensor(chain["original"], f"{where}.original", parameter=True)
        module._parameters[name] = original
        for position, step in enumerate(chain["modules"]):
            parametrisation = self.module(step, f"{where}.parametrizations.{position}", depth + 1)
            parametrize.register_parametrization(module, name, parametrisation, unsafe=True)
        getattr(module.parametrizations, name).original = original

    @staticmethod
    def _named(value: Any, where: str, what: str) -> list[tuple[str, Any]]:
        if not isinstance(value, dict) or not all(
                isinstance(name, str) and (name.isidentifier() or name.isdigit()) for name in value):
            raise CheckpointError(f"{where}: {what} are not a mapping of names")
        return list(value.items())


def model_from_checkpoint(content: bytes, trusted_classes: Iterable[type] = ()) -> nn.Module:
    """Rebuild the model a :func:`checkpoint_bytes` file holds, without unpickling code.

    ``trusted_classes`` (e.g. :func:`foreign_classes` of the model a run was given) are
    accepted besides the allow-list, matched by their ``module:qualname``.

    Raises
    ------
    CheckpointError
        If the content is not such a checkpoint (a pickled module, a corrupt or forged file,
        a class outside the allow-list, a reference to a tensor it does not store).
    """
    try:
        stored = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"not a tensors-and-plain-data checkpoint ({type(error).__name__}: "
                              f"{str(error)[:160]})") from None
    if not (isinstance(stored, dict) and stored.get("format") == CHECKPOINT_FORMAT
            and isinstance(stored.get("tensors"), dict)
            and all(isinstance(t, torch.Tensor) for t in stored["tensors"].values())):
        raise CheckpointError(f"not a {CHECKPOINT_FORMAT} file")
    trusted = {_class_name(cls): cls for cls in trusted_classes}
    return _Builder(stored["tensors"], trusted).module(stored.get("structure"), "the model")
