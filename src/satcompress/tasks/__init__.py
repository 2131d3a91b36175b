"""The reference tasks: real data, splits, preprocessing, metrics and baselines.

Task modules are NumPy-only (their preprocessing is part of the flight path); the models and
training live in :mod:`satcompress.tasks.registry`, which imports torch lazily.
"""

from satcompress.tasks.base import Split, TaskData, balanced_class_weights

__all__ = ["Split", "TaskData", "balanced_class_weights"]
