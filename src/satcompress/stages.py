"""The stage registry: one verb, ``apply(model, config, data) -> model``, for every method family.

Every compression stage (prune, distill, quantize, cluster, factorize, ...) is a frozen config
dataclass plus a handler registered for that config type (the torchao pattern). Configs
validate themselves in ``__post_init__`` with ``ValueError`` and round-trip through plain
dicts (hence JSON and TOML) under their registered ``stage`` name, so recipes, search results,
artifacts and reports all speak one language. A handler returns a new model and never mutates
its input; :func:`apply` checks that promise on every call. A handler may register a
``check`` alongside: it says, before any training, why the stage cannot run on a given model
(:func:`check`), and :func:`apply` refuses such a model up front.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from importlib import import_module
from collections.abc import Callable
from typing import Any, Protocol

from torch import nn

from satcompress.tasks.base import TaskData

__all__ = [
    "StageConfig",
    "Handler",
    "Check",
    "register_stage",
    "registered_stages",
    "config_type",
    "check",
    "apply",
    "config_to_dict",
    "config_from_dict",
    "config_to_json",
    "config_from_json",
    "load_builtin_stages",
    "check_integer",
    "check_module_names",
    "check_layer_settings",
    "stage_report",
]

BUILTIN_STAGE_MODULES: tuple[str, ...] = (
    "satcompress.distill",
    "satcompress.prune",
    "satcompress.lowrank",
    "satcompress.quantize",
    "satcompress.cluster",
)
"""Modules whose import registers the built-in stages (each method family adds itself)."""


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base class of stage configs: frozen, validated, serialisable.

    Subclasses are frozen dataclasses whose fields are plain values (numbers, strings,
    booleans, tuples of them) and which validate in ``__post_init__``, raising ``ValueError``
    with what is wrong and how to fix it.
    """


def check_integer(config: StageConfig, field_name: str, minimum: int | None = None,
                  hint: str = "") -> None:
    """Raise ``ValueError`` unless ``config.<field_name>`` is an int (not a bool) >= ``minimum``.

    ``hint`` (e.g. ``" (e.g. 30)"``) is inserted after the requirement in the message.
    """
    value = getattr(config, field_name)
    if isinstance(value, bool) or not isinstance(value, int) or (
        minimum is not None and value < minimum
    ):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(
            f"{type(config).__name__}.{field_name} must be an integer{bound}{hint}, got {value!r}."
        )


def check_module_names(config: StageConfig, field_name: str) -> None:
    """Raise ``ValueError`` unless ``config.<field_name>`` is a tuple of module-name strings."""
    value = getattr(config, field_name)
    if not isinstance(value, tuple) or not all(isinstance(name, str) for name in value):
        raise ValueError(
            f"{type(config).__name__}.{field_name} must be a tuple of module names, got {value!r}."
        )


def check_layer_settings(
    config: StageConfig, field_name: str, check_value: Callable[[Any], Any]
) -> dict[str, Any]:
    """Validate ``config.<field_name>``, a tuple of ``(module name, value)`` pairs; return it
    as a dict.

    Per-layer settings are stored as pairs (not a dict) so that configs stay frozen,
    hashable and plain data; a recipe file writes them as ``[["blocks.0.fc1", 4], ...]``.
    The pairs are normalised in place to a tuple of tuples (TOML gives lists).
    ``check_value(value)`` raises ``ValueError`` for a bad value. A name may appear once.
    """
    value = getattr(config, field_name)
    where = f"{type(config).__name__}.{field_name}"
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)
        for pair in value
    ):
        raise ValueError(
            f"{where} must be a tuple of (module name, value) pairs, e.g. "
            f"(('blocks.0.fc1', 4),); got {value!r}."
        )
    pairs = tuple((name, setting) for name, setting in value)
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{where} names {repeated} more than once; give each layer one value.")
    for _, setting in pairs:
        check_value(setting)
    object.__setattr__(config, field_name, pairs)
    return dict(pairs)


def stage_report(model: nn.Module, attribute: str, what: str, producer: str) -> dict[str, Any]:
    """A copy of the JSON-able report a stage left on ``model`` in ``attribute``.

    Raises ``ValueError`` naming ``what`` report is missing and which ``producer`` leaves it.
    """
    report = getattr(model, attribute, None)
    if report is None:
        raise ValueError(
            f"{type(model).__name__} carries no {what} report (attribute {attribute!r}); "
            f"only models returned by {producer} do."
        )
    return copy.deepcopy(report)


class Handler(Protocol):
    def __call__(self, model: nn.Module, config: Any, data: TaskData | None) -> nn.Module: ...


class Check(Protocol):
    """Why a stage cannot run on ``model`` (e.g. "the model has no Linear or convolution layer
    to factorise"), or None; quick, and never modifies ``model``."""

    def __call__(self, model: nn.Module, config: Any, data: TaskData | None) -> str | None: ...


_HANDLERS: dict[type, Handler] = {}
_CHECKS: dict[type, Check] = {}
_BY_NAME: dict[str, type] = {}


def register_stage(name: str, check: Check | None = None) -> Callable[[Handler], Handler]:
    """Decorator registering ``handler`` (and its optional ``check``, see :func:`check`) for
    the config class named in its annotation.

    Usage::

        @register_stage("magnitude_prune", check=_no_weights)
        def magnitude_prune(model: nn.Module, config: MagnitudePruneConfig, data) -> nn.Module:
            ...
    """

    def decorator(handler: Handler) -> Handler:
        config_class = handler.__annotations__.get("config")
        if isinstance(config_class, str):
            config_class = handler.__globals__[config_class]
        if not (isinstance(config_class, type) and issubclass(config_class, StageConfig)):
            raise TypeError(
                f"Stage handler {handler.__name__} must annotate its `config` argument with a "
                "StageConfig subclass."
            )
        if name in _BY_NAME and _BY_NAME[name] is not config_class:
            raise ValueError(f"Stage name {name!r} is already registered to {_BY_NAME[name]}.")
        _BY_NAME[name] = config_class
        _HANDLERS[config_class] = handler
        if check is not None:
            _CHECKS[config_class] = check
        config_class.stage_name = name
        return handler

    return decorator


def load_builtin_stages() -> dict[str, type]:
    """Import every built-in method family so its stages are registered; return them all."""
    for module in BUILTIN_STAGE_MODULES:
        import_module(module)
    return registered_stages()


def registered_stages() -> dict[str, type]:
    """Stage name -> config class, for every registered stage."""
    return dict(sorted(_BY_NAME.items()))


def config_type(name: str) -> type:
    """The config class registered under ``name``; a clear error lists the known stages."""
    load_builtin_stages()
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"Unknown stage {name!r}. Known stages: {', '.join(registered_stages()) or 'none'}."
        ) from None


def check(model: nn.Module, config: StageConfig, data: TaskData | None = None) -> str | None:
    """Why stage ``config`` cannot run on ``model``, as ``"<stage>: <reason>"``, found without
    training; None if its registered check (if any) finds nothing."""
    stage_check = _CHECKS.get(type(config))
    reason = None if stage_check is None else stage_check(model, config, data)
    return None if reason is None else f"{config.stage_name}: {reason}"


def apply(model: nn.Module, config: StageConfig, data: TaskData | None = None) -> nn.Module:
    """Run the stage ``config`` describes on a copy of ``model`` and return the new model.

    A model the stage's :func:`check` refuses raises ``ValueError`` with the reason before
    any work. The handler gets a deep copy, so even a careless handler cannot modify the
    caller's model.
    """
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ValueError(
            f"No stage handler is registered for {type(config).__name__}; known stages: "
            f"{', '.join(registered_stages()) or 'none'}."
        )
    reason = check(model, config, data)
    if reason is not None:
        raise ValueError(reason)
    result = handler(copy.deepcopy(model), config, data)
    if not isinstance(result, nn.Module):
        raise TypeError(f"Stage {config.stage_name!r} returned {type(result).__name__}, not a model.")
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def config_to_dict(config: StageConfig) -> dict[str, Any]:
    """``{"stage": name, **fields}`` with tuples as lists: ready for JSON or TOML."""
    if type(config) not in _HANDLERS:
        raise ValueError(f"{type(config).__name__} is not a registered stage config.")
    fields = {field.name: _plain(getattr(config, field.name)) for field in dataclasses.fields(config)}
    return {"stage": config.stage_name, **fields}


def config_from_dict(content: dict[str, Any]) -> StageConfig:
    """Rebuild a config from :func:`config_to_dict` output; unknown keys are errors."""
    content = dict(content)
    if "stage" not in content:
        raise ValueError(f"A stage entry needs a 'stage' key naming the stage; got {sorted(content)}.")
    config_class = config_type(content.pop("stage"))
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    unknown = sorted(set(content) - set(fields))
    if unknown:
        raise ValueError(
            f"Stage {config_class.stage_name!r} has no setting(s) {unknown}; "
            f"its settings are {sorted(fields)}."
        )
    values = {
        key: tuple(value) if isinstance(value, list) else value for key, value in content.items()
    }
    return config_class(**values)


def config_to_json(config: StageConfig) -> str:
    return json.dumps(config_to_dict(config), sort_keys=True)


def config_from_json(text: str) -> StageConfig:
    return config_from_dict(json.loads(text))
