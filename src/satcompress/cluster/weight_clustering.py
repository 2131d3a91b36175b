"""Weight clustering (weight sharing) with centroid fine-tuning, as in Deep Compression.

Han, Mao & Dally (2016, "Deep Compression", ICLR, section 3) replace the weights of each layer
by ``k`` shared values: k-means clusters the layer's weights, each weight is stored as the
``ceil(log2 k)``-bit index of its cluster, and the layer keeps a codebook of ``k`` float
centroids. The centroids are then fine-tuned: the gradient of a centroid is the sum of the
gradients of the weights that share it (their equation 3 and figure 3).

Here that is a parametrisation (:mod:`torch.nn.utils.parametrize`): while fine-tuning, a
clustered layer computes ``weight = codebook[indices]`` (:class:`ClusteredWeight`), so
autograd's backward of the gather accumulates the weight gradients per cluster into the
codebook, which is the only trained copy of the weights. :func:`bake_clusters` then turns
every clustered layer back into a plain ``nn.Linear``/``nn.Conv*d`` whose weight holds the
clustered values, so the exported model uses standard layers only, and keeps the codebook as
a buffer ``weight_codebook`` with ``stored_bits = {"weight": ceil(log2 k)}``:
:func:`satcompress.measure.theoretical_bytes` then counts exactly the indices (the weight
tensor, stored as indices) plus the codebook at 32 bits per centroid.

Pruned models: the exact zeros of a layer are never clustered. They form a dedicated zero
cluster, index 0, whose centroid is the constant 0 and is not trained, so a pruned weight stays
exactly zero and no kept weight becomes zero; the zero cluster is one of the ``k``.

A layer is clustered only where indices + codebook take fewer bytes than the float weight.

A BatchNorm after a convolution is first folded into it (:mod:`satcompress.cluster.batchnorm`,
which explains why): otherwise the export would scale each channel's clustered weights by
its own factor and the artifact would not hold the clustered values.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from satcompress.cluster.batchnorm import fold_batchnorm
from satcompress.cluster.kmeans import INITIALISATIONS, kmeans_1d
from satcompress.measure import STORED_BITS_ATTRIBUTE
from satcompress.finetune import FinetuneSettings
from satcompress.prune import prunable_weights, weights_check
from satcompress.stages import (
    check_integer,
    check_layer_settings,
    check_module_names,
    register_stage,
    stage_report,
)
from satcompress.tasks.base import TaskData

__all__ = [
    "CODEBOOK_BUFFER",
    "CLUSTER_REPORT_ATTRIBUTE",
    "MAX_CLUSTERS",
    "ClusteredWeight",
    "index_bits",
    "cluster_layer",
    "cluster_model",
    "bake_clusters",
    "cluster_indices",
    "cluster_report",
    "WeightClusterConfig",
    "weight_cluster",
]

CODEBOOK_BUFFER = "weight_codebook"
"""Name of the buffer a baked clustered layer keeps its centroids in."""

CLUSTER_REPORT_ATTRIBUTE = "cluster_report_"
"""Model attribute where :func:`weight_cluster` leaves its report (a JSON-able dict)."""

MAX_CLUSTERS = 256
"""Largest codebook: indices of at most 8 bits, as in Deep Compression."""

_FLOAT_BITS = 32


def index_bits(n_clusters: int) -> int:
    """Bits of one cluster index: ``ceil(log2 n_clusters)``, at least 1."""
    return max(1, math.ceil(math.log2(n_clusters)))


class ClusteredWeight(nn.Module):
    """Parametrisation ``weight = codebook[indices]`` with a trainable codebook.

    Parameters
    ----------
    centroids : Tensor
        1-D float centroids of the non-zero clusters (trained).
    indices : Tensor
        int64 tensor of the weight's shape: each weight's index into :meth:`codebook`.
    zero_cluster : bool
        Whether the codebook starts with a fixed, untrained 0 (the pruned weights' cluster).
    """

    def __init__(self, centroids: torch.Tensor, indices: torch.Tensor, zero_cluster: bool) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids.detach().clone())
        self.register_buffer("indices", indices.detach().clone())
        self.zero_cluster = zero_cluster

    def codebook(self) -> torch.Tensor:
        """All centroids, the fixed zero first when there is a zero cluster."""
        if self.zero_cluster:
            return torch.cat([self.centroids.new_zeros(1), self.centroids])
        return self.centroids

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        """The clustered weight; the original weight is ignored (and frozen)."""
        return self.codebook()[self.indices]


def cluster_layer(
    layer: nn.Module, n_clusters: int, init: str = "linear", max_iterations: int = 30,
    seed: int = 0,
) -> ClusteredWeight:
    """Cluster ``layer.weight`` in place: register a :class:`ClusteredWeight` on it.

    The exact zeros form the zero cluster (index 0, fixed at 0); k-means with the given
    initialisation clusters the other weights into at most ``n_clusters - 1`` (all
    ``n_clusters`` when there is no zero). The original weight is frozen; train the
    parametrisation's ``centroids``. Returns the parametrisation.
    """
    weight = layer.weight.detach()
    flat = weight.reshape(-1).double().numpy()
    nonzero = flat != 0
    zero_cluster = not nonzero.all()
    indices = np.zeros(flat.size, dtype=np.int64)
    centroids = np.zeros(0)
    if nonzero.any():
        centroids, labels = kmeans_1d(flat[nonzero], n_clusters - int(zero_cluster), init,
                                      max_iterations, seed)
        indices[nonzero] = labels + int(zero_cluster)
    parametrisation = ClusteredWeight(
        torch.from_numpy(centroids).to(weight.dtype),
        torch.from_numpy(indices).reshape(weight.shape),
        zero_cluster,
    )
    parametrize.register_parametrization(layer, "weight", parametrisation)
    layer.parametrizations.weight.original.requires_grad_(False)
    return parametrisation


def _saves_bytes(n_weights: int, n_clusters: int) -> bool:
    return n_weights * index_bits(n_clusters) + n_clusters * _FLOAT_BITS < n_weights * _FLOAT_BITS


def cluster_model(
    model: nn.Module,
    n_clusters: int,
    init: str = "linear",
    max_iterations: int = 30,
    seed: int = 0,
    skip_layers: tuple[str, ...] = (),
    layer_clusters: Mapping[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Cluster the weight of every Linear and convolution of ``model`` in place.

    Each layer gets ``n_clusters`` centroids unless ``layer_clusters`` names it. Layers are
    clustered only where ``ceil(log2 k)``-bit indices plus a ``k``-entry float32 codebook take
    fewer bits than the float32 weight. Returns ``{layer name: what was done}`` (clusters,
    index bits, zero cluster, or why the layer was left alone).
    """
    layer_clusters = dict(layer_clusters or {})
    weights = prunable_weights(model, skip_layers)
    unknown = sorted(set(layer_clusters) - {name.rpartition(".")[0] for name in weights})
    if unknown:
        raise ValueError(
            f"layer_clusters names {unknown}, which are not clusterable layers of "
            f"{type(model).__name__} (outside skip_layers); they are "
            f"{[name.rpartition('.')[0] for name in weights]}."
        )
    report: dict[str, dict[str, Any]] = {}
    for weight_name, weight in weights.items():
        layer_name = weight_name.rpartition(".")[0]
        clusters = layer_clusters.get(layer_name, n_clusters)
        if not _saves_bytes(weight.numel(), clusters):
            report[layer_name] = {"clustered": False,
                                  "reason": f"{weight.numel()} weights: a {clusters}-entry "
                                            "codebook would not save bytes"}
            continue
        parametrisation = cluster_layer(model.get_submodule(layer_name), clusters, init,
                                        max_iterations, seed)
        clusters = len(parametrisation.codebook())
        report[layer_name] = {"clustered": True, "clusters": clusters,
                              "index_bits": index_bits(clusters),
                              "zero_cluster": parametrisation.zero_cluster,
                              "weights": weight.numel(),
                              "zero_weights": int((weight == 0).sum())}
    return report


@torch.no_grad()
def bake_clusters(model: nn.Module) -> nn.Module:
    """Replace every :class:`ClusteredWeight` of ``model`` by a plain clustered weight, in place.

    Each such layer's weight becomes a plain parameter equal to ``codebook[indices]``; the
    codebook is kept as buffer :data:`CODEBOOK_BUFFER` and the layer declares
    ``stored_bits["weight"] = ceil(log2 k)``. Returns ``model``.
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        parametrisations = module.parametrizations.weight
        if len(parametrisations) != 1 or not isinstance(parametrisations[0], ClusteredWeight):
            continue
        codebook = parametrisations[0].codebook().detach().clone()
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        module.weight.requires_grad_(True)
        module.register_buffer(CODEBOOK_BUFFER, codebook)
        declared = dict(getattr(module, STORED_BITS_ATTRIBUTE, None) or {})
        declared["weight"] = index_bits(len(codebook))
        setattr(module, STORED_BITS_ATTRIBUTE, declared)
    return model


def cluster_indices(layer: nn.Module) -> np.ndarray:
    """The cluster index of every weight of a baked clustered layer (int64, weight's shape).

    Index ``i`` refers to ``layer.weight_codebook[i]``; with a zero cluster, index 0 is 0.

    Raises
    ------
    ValueError
        If the layer has no codebook, or a weight is not one of its centroids (the weights
        were changed after clustering, so its ``stored_bits`` declaration no longer holds).
    """
    codebook = getattr(layer, CODEBOOK_BUFFER, None)
    if codebook is None:
        raise ValueError(
            f"{type(layer).__name__} has no {CODEBOOK_BUFFER!r} buffer; only layers clustered "
            "by satcompress.cluster (and baked) have cluster indices."
        )
    codebook = codebook.detach().numpy()
    weight = layer.weight.detach().numpy()
    order = np.argsort(codebook, kind="stable")
    position = np.clip(np.searchsorted(codebook[order], weight, side="left"), 0, len(order) - 1)
    indices = order[position]
    if not np.array_equal(codebook[indices], weight):
        raise ValueError(
            f"{int((codebook[indices] != weight).sum())} weights of this "
            f"{type(layer).__name__} are not centroids of its codebook: it was trained after "
            "clustering. Cluster it again (stage 'weight_cluster') so that its declared "
            "stored_bits hold."
        )
    return indices.astype(np.int64)


def cluster_report(model: nn.Module) -> dict[str, Any]:
    """A copy of the report :func:`weight_cluster` left on ``model``."""
    return stage_report(model, CLUSTER_REPORT_ATTRIBUTE, "clustering", "stage 'weight_cluster'")


@dataclasses.dataclass(frozen=True)
class WeightClusterConfig(FinetuneSettings):
    """Settings of stage ``weight_cluster`` (fine-tuning fields: see ``FinetuneSettings``).

    Attributes
    ----------
    n_clusters : int
        Codebook entries per layer, 2 to 256 (the zero cluster of a pruned layer included);
        indices take ``ceil(log2 n_clusters)`` bits. Han et al. used 256 for convolutions and
        32 for fully connected layers.
    init : {"linear", "kmeans++"}
        Centroid initialisation; "linear" is Han et al.'s recommendation.
    kmeans_iterations : int
        Upper bound on Lloyd iterations per layer.
    skip_layers : tuple of str
        Module names whose weights are left unclustered.
    layer_clusters : tuple of (str, int)
        Per-layer codebook sizes overriding ``n_clusters`` for the named layers, e.g.
        ``(("blocks.0.fc1", 4),)`` (what a search chooses).
    """

    n_clusters: int = 16
    init: str = "linear"
    kmeans_iterations: int = 30
    skip_layers: tuple[str, ...] = ()
    layer_clusters: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        _check_clusters(self.n_clusters, f"{name}.n_clusters")
        check_layer_settings(self, "layer_clusters",
                             lambda k: _check_clusters(k, f"each of {name}.layer_clusters"))
        if self.init not in INITIALISATIONS:
            raise ValueError(f"{name}.init must be one of {INITIALISATIONS}, got {self.init!r}.")
        check_integer(self, "kmeans_iterations", 1, hint=" (e.g. 30)")
        check_module_names(self, "skip_layers")


def _check_clusters(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MAX_CLUSTERS:
        raise ValueError(
            f"{what} must be an integer from 2 to {MAX_CLUSTERS} (e.g. 16 for 4-bit indices), "
            f"got {value!r}."
        )


@register_stage("weight_cluster", check=weights_check("cluster"))
def weight_cluster(
    model: nn.Module, config: WeightClusterConfig, data: TaskData | None
) -> nn.Module:
    """Fold BatchNorms into their convolutions, cluster every layer's weights, fine-tune the
    centroids, bake back to plain layers.

    Returns a new model (the input is not modified) with the report in attribute
    :data:`CLUSTER_REPORT_ATTRIBUTE`: ``layers`` (see :func:`cluster_model`),
    ``batchnorm_folded`` (BatchNorm -> the convolution it was folded into) and
    ``batchnorm_kept`` (BatchNorm -> why it was not folded; see
    :func:`~satcompress.cluster.batchnorm.fold_batchnorm`). Needs ``data`` unless
    ``finetune_epochs == 0``.
    """
    model = copy.deepcopy(model)
    folded, kept = fold_batchnorm(model, config.skip_layers)
    layers = cluster_model(model, config.n_clusters, config.init, config.kmeans_iterations,
                           config.seed, config.skip_layers, dict(config.layer_clusters))
    config.finetune(model, data)
    bake_clusters(model)
    setattr(model, CLUSTER_REPORT_ATTRIBUTE, {"n_clusters": config.n_clusters,
                                              "init": config.init, "layers": layers,
                                              "batchnorm_folded": folded,
                                              "batchnorm_kept": kept})
    return model
