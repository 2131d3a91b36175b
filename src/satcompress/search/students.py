"""Distilled students shared by every trial and worker process of one search, on disk.

Distilling a student is a search's most expensive step, and every trial choosing the same
student fraction needs the same one. :class:`StudentStore` maps a distillation config to its
student: in memory within a process, and -- given a folder -- as a stage checkpoint
(:mod:`satcompress.pipeline.checkpoint`: tensors and plain JSON, never unpickled) named by
the SHA-256 of the config and the teacher's weights, so worker processes and later runs
reuse students distilled elsewhere instead of training their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from torch import nn

from satcompress import stages
from satcompress.fileio import atomic_write_bytes
from satcompress.pipeline.checkpoint import (
    CheckpointError,
    checkpoint_bytes,
    foreign_classes,
    model_from_checkpoint,
    weights_sha256,
)

__all__ = ["StudentStore"]


class StudentStore(MutableMapping):
    """Students by distillation config; with ``folder``, also stored there (see module notes).

    Parameters
    ----------
    teacher : nn.Module
        The model the students are distilled from (its weights are part of every key; its
        own layer classes are trusted when a stored student is rebuilt).
    folder : path, optional
        Where students are shared between processes (e.g. ``OUT/students``).
    """

    def __init__(self, teacher: nn.Module, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.teacher_sha256 = weights_sha256(teacher)
        self.trusted = foreign_classes(teacher)
        self.memory: dict[stages.StageConfig, nn.Module] = {}

    def path(self, config: stages.StageConfig) -> Path | None:
        """The file holding ``config``'s student (None without a folder)."""
        if self.folder is None:
            return None
        key = json.dumps({"stage": stages.config_to_dict(config),
                          "teacher": self.teacher_sha256}, sort_keys=True)
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"

    def _stored(self, config: stages.StageConfig) -> nn.Module | None:
        path = self.path(config)
        if path is None or not path.is_file():
            return None
        try:
            return model_from_checkpoint(path.read_bytes(), self.trusted)
        except CheckpointError:
            return None  # damaged or foreign: distil again

    def __getitem__(self, config: stages.StageConfig) -> nn.Module:
        if config not in self.memory:
            stored = self._stored(config)
            if stored is None:
                raise KeyError(config)
            self.memory[config] = stored
        return self.memory[config]

    def __contains__(self, config: object) -> bool:
        try:
            self[config]
        except KeyError:
            return False
        return True

    def __setitem__(self, config: stages.StageConfig, student: nn.Module) -> None:
        self.memory[config] = student
        path = self.path(config)
        if path is not None:
            try:
                atomic_write_bytes(path, checkpoint_bytes(student))
            except CheckpointError:
                pass  # kept in memory only (a layer holding a function cannot be stored)

    def __delitem__(self, config: stages.StageConfig) -> None:
        del self.memory[config]

    def __iter__(self) -> Iterator[stages.StageConfig]:
        return iter(self.memory)

    def __len__(self) -> int:
        return len(self.memory)
