"""Recipes: ordered lists of stage configs, validated as a whole, stored as TOML.

A recipe file names stages from the registry only (never Python objects)::

    name = "deep-compression"
    description = "Han et al. 2016: prune, cluster, Huffman-code"

    [[stage]]
    stage = "magnitude_prune"
    sparsity = 0.8

    [[stage]]
    stage = "weight_cluster"
    clusters = 16

A top-level ``fec = true | false`` says whether the flight artifact carries Reed-Solomon
forward error correction (:mod:`satcompress.artifact.fec`); absent, it does
(:data:`DEFAULT_FEC`). A top-level ``protect = ["ranges", "tables", "compact", "scrub"]``
(any of them; absent: none) records in the artifact the protections against upsets in RAM
that the runtime applies at load (:mod:`satcompress.runtime.protect`; the ranges calibrated
on the training split by :func:`satcompress.radiation.protect_artifact`), their bytes counted
in ``max_bytes``.

Order matters and is checked: a stage of a later family may not come before one of an
earlier family (distill -> prune / factorize -> quantize / cluster -> entropy-code), so
e.g. clustering before pruning, which would break the shared codebook or revive weights,
is refused with a message saying how to reorder.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from satcompress import stages
from satcompress.fileio import atomic_write_text
from satcompress.radiation import check_protections

__all__ = ["Recipe", "stage_family", "named_recipes", "FAMILY_ORDER", "DEFAULT_FEC"]

DEFAULT_FEC = True
"""Whether a recipe's artifact carries Reed-Solomon FEC when the recipe does not say: yes, so
that one upset byte on the way to (or in the flash of) a spacecraft is corrected instead of
losing the model; 8 parity bytes per 255 (about 3.3 %), counted in ``max_bytes``."""

FAMILY_ORDER = {"distill": 0, "prune": 1, "lowrank": 1, "quantize": 2, "cluster": 2, "entropy": 3}
"""Rank of each method family in a valid recipe; equal ranks may come in either order."""


def stage_family(config: stages.StageConfig) -> str:
    """The method family of a stage: the ``satcompress`` sub-package its config lives in."""
    parts = type(config).__module__.split(".")
    family = parts[1] if len(parts) > 1 and parts[0] == "satcompress" else "other"
    if family not in FAMILY_ORDER:
        raise ValueError(
            f"Stage {config.stage_name!r} belongs to no known method family ({family}); "
            f"families: {', '.join(FAMILY_ORDER)}."
        )
    return family


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise ValueError(f"Cannot write {value!r} ({type(value).__name__}) to a recipe file.")


@dataclass(frozen=True)
class Recipe:
    """A named, ordered list of stage configs, whether its artifact carries FEC, and the
    protections it records (``protect``).

    Raises ``ValueError`` on construction when the order is impossible (see module docs) or
    ``protect`` names an unknown protection.
    """

    name: str
    stages: tuple[stages.StageConfig, ...]
    description: str = ""
    fec: bool = DEFAULT_FEC
    protect: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("A recipe needs a name.")
        if not self.stages:
            raise ValueError(f"Recipe {self.name!r} has no stages; add at least one [[stage]].")
        if not isinstance(self.fec, bool):
            raise ValueError(f"Recipe {self.name!r}: fec must be true or false (Reed-Solomon "
                             f"error correction of the artifact on or off), got {self.fec!r}.")
        object.__setattr__(self, "stages", tuple(self.stages))
        try:
            object.__setattr__(self, "protect", check_protections(self.protect))
        except ValueError as error:
            raise ValueError(f"Recipe {self.name!r}: {error}") from None
        for position, config in enumerate(self.stages):
            if not isinstance(config, stages.StageConfig):
                raise ValueError(
                    f"Recipe {self.name!r} stage {position + 1} is {type(config).__name__}, "
                    "not a stage config."
                )
        families = [stage_family(config) for config in self.stages]
        for position in range(1, len(families)):
            earlier, later = families[position - 1], families[position]
            if FAMILY_ORDER[later] < FAMILY_ORDER[earlier]:
                raise ValueError(
                    f"Recipe {self.name!r}: stage {position + 1} "
                    f"({self.stages[position].stage_name}, a {later} stage) comes after stage "
                    f"{position} ({self.stages[position - 1].stage_name}, a {earlier} stage). "
                    f"{later.capitalize()} must run before {earlier}: the later stage would "
                    "undo or break what the earlier one stored. Reorder the stages."
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "fec": self.fec,
            "protect": list(self.protect),
            "stage": [stages.config_to_dict(config) for config in self.stages],
        }

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> "Recipe":
        unknown = sorted(set(content) - {"name", "description", "fec", "protect", "stage"})
        if unknown:
            raise ValueError(f"Unknown recipe key(s) {unknown}; a recipe has name, description, "
                             "fec, protect, stage.")
        entries = content.get("stage", [])
        if not isinstance(entries, list):
            raise ValueError("A recipe's stages are a list of [[stage]] tables.")
        return cls(
            name=content.get("name", ""),
            description=content.get("description", ""),
            fec=content.get("fec", DEFAULT_FEC),
            protect=content.get("protect", ()),
            stages=tuple(stages.config_from_dict(entry) for entry in entries),
        )

    def to_toml(self) -> str:
        lines = [f"name = {_toml_value(self.name)}",
                 f"description = {_toml_value(self.description)}",
                 f"fec = {_toml_value(self.fec)}"]
        if self.protect:
            lines.append(f"protect = {_toml_value(self.protect)}")
        for config, entry in zip(self.stages, self.to_dict()["stage"]):
            defaults = {field.name: field.default for field in dataclasses.fields(config)}
            lines += ["", "[[stage]]"]
            for key, value in entry.items():
                if value is None and defaults.get(key) is None:
                    continue  # TOML has no null: an absent key means the default, None
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, source: str = "<recipe>") -> "Recipe":
        try:
            content = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{source} is not valid TOML: {error}.") from None
        return cls.from_dict(content)

    @classmethod
    def load(cls, name_or_path: str | Path) -> "Recipe":
        """A shipped recipe by name (see :func:`named_recipes`) or a recipe TOML file."""
        shipped = named_recipes()
        if str(name_or_path) in shipped:
            return cls.from_toml(shipped[str(name_or_path)], source=f"recipe {name_or_path}")
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(
                f"{name_or_path} is neither a shipped recipe ({', '.join(sorted(shipped))}) "
                "nor an existing recipe file."
            )
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise ValueError(f"{path} is over {MAX_RECIPE_BYTES} bytes: not a recipe (a recipe "
                             "is a few [[stage]] tables).")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text: not a recipe TOML file.") from None
        return cls.from_toml(text, source=str(path))

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_toml())


MAX_RECIPE_BYTES = 1 << 20
"""Largest recipe file read (checked before reading)."""


def named_recipes() -> dict[str, str]:
    """The recipes shipped with satcompress, name -> TOML text (``pipeline/recipes/*.toml``)."""
    folder = resources.files("satcompress.pipeline").joinpath("recipes")
    return {
        entry.name.removesuffix(".toml"): entry.read_text()
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    }
