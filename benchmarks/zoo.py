"""A model zoo written the way a user writes models: plain ``torch.nn`` code, nothing from
``satcompress``. Each factory returns an untrained model, so each is usable from the CLI as
``--model benchmarks.zoo:NAME`` with ``--weights`` (run from the repository root):

* :func:`resnet18_1d` -- a ResNet-18 layout 1-D CNN (stem conv, BasicBlocks 2-2-2-2 of
  Conv1d + BatchNorm1d, global average pooling, Linear head) on light curves ``(n, 100, 4)``;
* :func:`rapid_gru` -- a RAPID-style (Muthukrishna et al. 2019) two-layer GRU on light curves;
* :func:`transformer` -- an ``nn.TransformerEncoder`` classifier on light curves;
* :func:`flare_mlp` -- a plain ``nn.Sequential`` MLP on (standardised) SHARP features;
* :func:`blob_cnn` -- a small 2-D CNN with BatchNorm and pooling on 16 x 16 images.

Sizes are keyword arguments, so the tests build tiny versions of the same code.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock1d", "ResNet1d", "resnet18_1d", "RapidGRU", "rapid_gru",
           "TransformerClassifier", "transformer", "flare_mlp", "blob_cnn"]


# ----------------------------------------------------------------------------------------
# (a) ResNet-18 layout, 1-D
# ----------------------------------------------------------------------------------------


class BasicBlock1d(nn.Module):
    """He et al. (2016)'s BasicBlock with 1-D convolutions (kernel 3)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv1d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm1d(channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class ResNet1d(nn.Module):
    """ResNet-18 layout (torchvision's ``resnet18``, 1-D) for sequences ``(batch, time,
    channels)``: a kernel-7 stride-2 stem conv with BatchNorm, ReLU and a stride-2 max pool,
    four stages of two BasicBlocks (the first of stages 2-4 halves the time axis), global
    average pooling over time and a Linear head. 100 time steps become 50, 25, 13, 7, 4.
    ``stem_stride=1, stem_pool=False`` keeps the full resolution (the CIFAR variant).

    The inputs are clipped to +-``clip`` first: the peak-normalised light curves lie within
    about +-1.5, but a handful of objects' GP extrapolations reach +-100, and one such object
    in a batch wrecks BatchNorm's running statistics (validation accuracy fell below 10%)."""

    def __init__(self, in_channels: int = 4, n_classes: int = 5,
                 widths: tuple[int, ...] = (64, 128, 256, 512), blocks: int = 2,
                 stem_stride: int = 2, stem_pool: bool = True, clip: float = 3.0):
        super().__init__()
        self.clip = clip
        stem = [nn.Conv1d(in_channels, widths[0], 7, stem_stride, padding=3, bias=False),
                nn.BatchNorm1d(widths[0]), nn.ReLU()]
        if stem_pool:
            stem.append(nn.MaxPool1d(3, 2, padding=1))
        self.stem = nn.Sequential(*stem)
        stages, previous = [], widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers = [BasicBlock1d(previous, width, stride)]
            layers += [BasicBlock1d(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(previous, n_classes)

    def forward(self, x):
        x = x.clamp(-self.clip, self.clip)  # a few GP extrapolations reach +-100
        x = self.stem(x.transpose(1, 2))  # (batch, time, channels) -> channels first
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


def resnet18_1d(widths: tuple[int, ...] = (64, 128, 256, 512), in_channels: int = 4,
                n_classes: int = 5, stem_stride: int = 2, stem_pool: bool = True) -> ResNet1d:
    """The ResNet-18 layout teacher on transient light curves ``(n, 100, 4)``."""
    return ResNet1d(in_channels, n_classes, tuple(widths), 2, stem_stride, stem_pool)


# ----------------------------------------------------------------------------------------
# (b) RAPID-style GRU
# ----------------------------------------------------------------------------------------


class RapidGRU(nn.Module):
    """Two unidirectional GRU layers over the light curve (RAPID: 100 units each, dropout
    between them), the last time step's state into a Linear classifier. Inputs clipped to
    +-``clip`` as in :class:`ResNet1d`."""

    def __init__(self, in_channels: int = 4, n_classes: int = 5, hidden: int = 100,
                 dropout: float = 0.2, clip: float = 3.0):
        super().__init__()
        self.clip = clip
        self.gru = nn.GRU(in_channels, hidden, num_layers=2, batch_first=True, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x):
        sequence, _ = self.gru(x.clamp(-self.clip, self.clip))
        return self.head(self.dropout(sequence[:, -1]))


def rapid_gru(hidden: int = 100, in_channels: int = 4, n_classes: int = 5) -> RapidGRU:
    return RapidGRU(in_channels, n_classes, hidden)


# ----------------------------------------------------------------------------------------
# (c) Transformer encoder
# ----------------------------------------------------------------------------------------


class TransformerClassifier(nn.Module):
    """Linear embedding of each time step plus a learned position embedding, an
    ``nn.TransformerEncoder`` (post-norm, batch first), mean over time, Linear head. Inputs
    clipped to +-``clip`` as in :class:`ResNet1d`."""

    def __init__(self, in_channels: int = 4, n_classes: int = 5, length: int = 100,
                 d_model: int = 32, heads: int = 4, layers: int = 2, feedforward: int = 64,
                 dropout: float = 0.1, clip: float = 3.0):
        super().__init__()
        self.clip = clip
        self.embed = nn.Linear(in_channels, d_model)
        self.position = nn.Parameter(torch.zeros(1, length, d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, feedforward, dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x):
        x = self.encoder(self.embed(x.clamp(-self.clip, self.clip)) + self.position)
        return self.head(x.mean(dim=1))


def transformer(d_model: int = 32, heads: int = 4, layers: int = 2, feedforward: int = 64,
                length: int = 100, in_channels: int = 4, n_classes: int = 5
                ) -> TransformerClassifier:
    return TransformerClassifier(in_channels, n_classes, length, d_model, heads, layers,
                                 feedforward)


# ----------------------------------------------------------------------------------------
# (d) MLP on the flare table
# ----------------------------------------------------------------------------------------


def flare_mlp(features: int = 25, hidden: int = 128, n_classes: int = 2) -> nn.Sequential:
    """A plain MLP; trained on standardised features (``--standardize`` at compression)."""
    return nn.Sequential(
        nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(hidden, n_classes),
    )


# ----------------------------------------------------------------------------------------
# (e) 2-D CNN
# ----------------------------------------------------------------------------------------


def blob_cnn(channels: tuple[int, int] = (16, 32), n_classes: int = 3, in_channels: int = 1
             ) -> nn.Sequential:
    """Two conv-BatchNorm-ReLU-maxpool stages, global average pooling, Linear head; takes
    images ``(n, in_channels, 16, 16)``."""
    first, second = channels
    return nn.Sequential(
        nn.Conv2d(in_channels, first, 3, padding=1), nn.BatchNorm2d(first), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(first, second, 3, padding=1), nn.BatchNorm2d(second), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(second, n_classes),
    )
