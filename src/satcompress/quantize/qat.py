"""Quantization-aware training: fine-tune through fake quantization to recover low-bit accuracy.

Following Jacob et al. 2018 (section 3), the float model is first quantized as in
post-training quantization; training then continues with the quantized weights in the forward
pass, while the gradient reaches the float ("latent") weights through the straight-through
estimator of ``torch.fake_quantize_per_channel_affine`` (Bengio et al. 2013). After every
optimiser step the per-channel scales are recomputed from the weights' current ``max|w|``
(the paper's min/max weight ranges), and at the end weights and biases are snapped to their
integer grids, so the returned model holds exactly what its integers represent. Early
stopping on the validation loss includes the starting point (the post-training-quantized
model), so fine-tuning never returns a model worse on validation than it started from.

Deviations from the paper: activation ranges, when quantized, are calibrated once before
training and then held fixed (the paper tracks them with moving averages during training);
scales are not learned (LSQ, Esser et al. 2020, is not implemented); batch normalisation is
not folded into the preceding convolution (the paper's section 3.2): it stays a float layer
after the quantized convolution, in PyTorch and in the flight artifact alike.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from satcompress.quantize.ptq import (
    QuantizationSettings,
    convert,
    no_quantizable_layer,
    quantized_layers,
)
from satcompress.stages import register_stage
from satcompress.tasks.base import TaskData
from satcompress.training import TrainConfig, class_weighted_loss, fit

__all__ = [
    "QuantizationAwareTrainConfig",
    "quantization_aware_train",
    "fine_tune_quantized",
]

_BATCH = 512


@dataclasses.dataclass(frozen=True)
class QuantizationAwareTrainConfig(QuantizationSettings):
    """Quantization-aware fine-tuning; the default is 4-bit weights, float activations.

    The quantization settings are those of
    :class:`~satcompress.quantize.ptq.QuantizationSettings`; the training ones are passed to
    :class:`~satcompress.training.TrainConfig` (class-weighted cross-entropy, AdamW, one-cycle
    schedule, early stopping on validation loss).

    Attributes
    ----------
    max_epochs, batch_size, learning_rate, weight_decay, patience_epochs : int or float
        Fine-tuning settings. Keep the patience close to ``max_epochs``: the latent weights
        move by less than a grid step for a while before any quantized weight changes, so the
        validation loss of the quantized model can sit still for several epochs before it
        improves. No weight decay by default: it would pull small weights toward zero across
        grid points.
    """

    weight_bits: int = 4
    quantize_activations: bool = False
    max_epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience_epochs: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        self.train_config()  # TrainConfig validates the training settings

    def train_config(self) -> TrainConfig:
        """The :class:`~satcompress.training.TrainConfig` of the fine-tuning run."""
        return TrainConfig(
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            patience_epochs=self.patience_epochs,
            seed=self.seed,
        )


def _refresh_weight_scales(model: nn.Module) -> None:
    for layer in quantized_layers(model).values():
        layer.refresh_weight_scale()


@torch.no_grad()
def _validation_loss(model: nn.Module, data: TaskData) -> float:
    """Class-weighted cross-entropy on the validation split: what :func:`fit` early-stops on."""
    model.eval()
    logits = torch.cat([model(torch.tensor(data.val.x[start : start + _BATCH]))
                        for start in range(0, len(data.val), _BATCH)])
    return class_weighted_loss(data)(logits, torch.tensor(data.val.y)).item()


def fine_tune_quantized(model: nn.Module, data: TaskData, config: TrainConfig) -> nn.Module:
    """Train a model holding quantized layers IN PLACE through fake quantization; return it.

    Scales follow the weights after every step; weights and biases end snapped to their grids.
    Early stopping counts the starting point as epoch 0: if no epoch improves the validation
    loss of the quantized model, the model is returned as it came in.
    """
    if not quantized_layers(model):
        raise ValueError(
            "fine_tune_quantized needs a model with quantized layers; quantize it first "
            "(satcompress.quantize.convert)."
        )
    start_loss, start_state = _validation_loss(model, data), copy.deepcopy(model.state_dict())
    model = fit(model, data, config, after_step=_refresh_weight_scales, copy_model=False,
                description="quantization-aware training")
    if _validation_loss(model, data) > start_loss:
        model.load_state_dict(start_state)
    for layer in quantized_layers(model).values():
        layer.snap_to_grid()
    return model


@register_stage("quantization_aware_train", check=no_quantizable_layer)
def quantization_aware_train(
    model: nn.Module, config: QuantizationAwareTrainConfig, data: TaskData | None
) -> nn.Module:
    """Quantize ``model`` and fine-tune it through fake quantization; see :mod:`.qat`.

    The returned model's :func:`~satcompress.quantize.ptq.quantize_report` names the layers
    left in float and why.
    """
    if data is None:
        raise ValueError(
            "quantization_aware_train fine-tunes on the task's training split: pass its data."
        )
    return fine_tune_quantized(convert(model, config, data), data, config.train_config())
