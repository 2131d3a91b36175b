"""Supervised training of a classifier on a task's splits, shared by every task and stage.

One loop serves base-model training and the fine-tuning that compression stages need:
AdamW, class-weighted cross-entropy (the task's heavy class imbalance), a cosine learning-rate
schedule, and early stopping on the validation loss with the best weights restored.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from satcompress.progress import Progress, default_progress
from satcompress.tasks.base import Split, TaskData

__all__ = ["TrainConfig", "TrainingLoss", "fit", "predict_proba", "class_weighted_loss"]

TrainingLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(model, inputs, labels) -> scalar``: runs the forward pass itself, so a loss may
also use a teacher's outputs (distillation) or hooked intermediate features (hints)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`fit`.

    Attributes
    ----------
    max_epochs : int
        Upper bound on passes over the training split.
    batch_size : int
        Examples per optimiser step.
    learning_rate : float
        Peak AdamW learning rate (cosine-decayed to zero over ``max_epochs``).
    weight_decay : float
        AdamW decoupled weight decay.
    patience_epochs : int
        Stop after this many epochs without a better validation loss.
    seed : int
        Seeds the shuffling and any dropout, so a run is repeatable.
    threads : int
        ``torch.set_num_threads`` while training (restored afterwards). Fixed so results do
        not depend on the machine's core count; one thread is also the fastest for the small
        batches used here.
    """

    max_epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience_epochs: int = 10
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size", "patience_epochs", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}.")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}.")

    def to_dict(self) -> dict:
        return asdict(self)


def class_weighted_loss(data: TaskData) -> nn.CrossEntropyLoss:
    """Cross-entropy with balanced class weights from the training labels."""
    return nn.CrossEntropyLoss(weight=torch.from_numpy(data.class_weights()))


def _batches(split: Split, batch_size: int, order: np.ndarray | None = None):
    indices = np.arange(len(split)) if order is None else order
    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        yield torch.from_numpy(split.x[chosen]), torch.from_numpy(split.y[chosen])


@torch.no_grad()
def _mean_loss(model: nn.Module, split: Split, loss_fn: nn.Module, batch_size: int) -> float:
    model.eval()
    total = 0.0
    for inputs, labels in _batches(split, batch_size):
        total += loss_fn(model(inputs), labels).item() * len(labels)
    return total / len(split)


def _learning_rate_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle schedule (Smith 2018): 10% warm-up, then cosine decay to near zero.

    The warm-up is stretched to at least two steps (OneCycleLR divides by its length minus
    one), and runs too short for two phases keep a constant learning rate.
    """
    if total_steps < 4:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.learning_rate,
        total_steps=total_steps,
        pct_start=max(0.1, 2.0 / total_steps),
    )


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (softmax of the model's logits) for inputs ``x``, in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        outputs = [
            torch.softmax(model(torch.tensor(x[start : start + batch_size])), dim=-1)
            for start in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(outputs).numpy().astype(np.float64)


def fit(
    model: nn.Module,
    data: TaskData,
    config: TrainConfig = TrainConfig(),
    *,
    loss_fn: TrainingLoss | None = None,
    extra_parameters: Iterable[nn.Parameter] = (),
    after_step: Callable[[nn.Module], None] | None = None,
    copy_model: bool = True,
    description: str = "training",
    progress: bool | None = None,
) -> nn.Module:
    """Train ``model`` on ``data.train``; return it with the weights of the best validation loss.

    Parameters
    ----------
    loss_fn : TrainingLoss, optional
        ``loss(model, inputs, labels)``; default class-weighted cross-entropy of
        ``model(inputs)``. Early stopping always uses the class-weighted validation
        cross-entropy, so every task's imbalance is respected the same way.
    extra_parameters : iterable of Parameter
        Trained alongside the model but not part of it (e.g. a FitNets regressor).
    after_step : callable, optional
        Called with the model after every optimiser step (e.g. to re-apply pruning masks).
    copy_model : bool
        Train a deep copy (default), so the caller's model is never modified. Stages that
        already hold their own copy, with hooks or references into it, pass ``False``.
    progress : bool, optional
        Report the epochs (:class:`satcompress.progress.Progress`); None:
        :func:`satcompress.progress.default_progress` (on under the command line).
    """
    if len(data.train) == 0 or len(data.val) == 0:
        raise ValueError("fit needs non-empty train and validation splits.")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _fit(
            copy.deepcopy(model) if copy_model else model, data, config,
            loss_fn, tuple(extra_parameters), after_step, description, progress,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _fit(
    model: nn.Module,
    data: TaskData,
    config: TrainConfig,
    loss_fn: TrainingLoss | None,
    extra_parameters: tuple[nn.Parameter, ...],
    after_step: Callable[[nn.Module], None] | None,
    description: str,
    progress: bool | None,
) -> nn.Module:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    weighted_ce = class_weighted_loss(data)
    train_loss = loss_fn or (lambda net, inputs, labels: weighted_ce(net(inputs), labels))
    trainable = [p for p in model.parameters() if p.requires_grad] + list(extra_parameters)
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = -(-len(data.train) // config.batch_size)
    schedule = _learning_rate_schedule(optimizer, config, config.max_epochs * steps_per_epoch)
    # The starting weights are the first candidate: fine-tuning never returns a model that is
    # worse on validation than the one it was given.
    best_loss = _mean_loss(model, data.val, weighted_ce, config.batch_size * 4)
    best_state, epochs_since_best = copy.deepcopy(model.state_dict()), 0

    # A live line on a terminal, a log line every 10 s elsewhere (satcompress.progress).
    enabled = default_progress() if progress is None else progress
    with Progress(f"{description} (epochs)", config.max_epochs, enabled=enabled) as bar:
        for _ in range(config.max_epochs):
            model.train()
            for inputs, labels in _batches(
                data.train, config.batch_size, rng.permutation(len(data.train))
            ):
                optimizer.zero_grad(set_to_none=True)
                train_loss(model, inputs, labels).backward()
                optimizer.step()
                schedule.step()
                if after_step is not None:
                    after_step(model)
            val_loss = _mean_loss(model, data.val, weighted_ce, config.batch_size * 4)
            bar.advance(1, extra=f"val loss {val_loss:.4f}")
            if val_loss < best_loss - 1e-6:
                best_loss, best_state, epochs_since_best = val_loss, copy.deepcopy(model.state_dict()), 0
            else:
                epochs_since_best += 1
                if epochs_since_best >= config.patience_epochs:
                    break
    model.load_state_dict(best_state)
    model.eval()
    return model
