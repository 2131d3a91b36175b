"""Weight clustering (weight sharing): k shared centroids per layer plus per-weight indices.

Importing this package registers the stage ``weight_cluster`` (:class:`WeightClusterConfig`):
k-means per layer (linear or k-means++ initialisation), centroid fine-tuning through the
parametrisation ``weight = codebook[indices]``, then baking back to plain layers that declare
their indices' bit width (Han, Mao & Dally 2016, "Deep Compression"). Pruned weights stay
exactly zero. :mod:`satcompress.entropy` Huffman-codes the indices (:func:`cluster_indices`).
A BatchNorm after a convolution is folded into it first (:func:`fold_batchnorm`), so the
artifact stores the clustered values themselves.
"""

from satcompress.cluster.batchnorm import conv_batchnorm_pairs, fold_batchnorm
from satcompress.cluster.kmeans import (
    INITIALISATIONS,
    kmeans_1d,
    kmeans_plus_plus_centroids,
    linear_centroids,
)
from satcompress.cluster.weight_clustering import (
    CLUSTER_REPORT_ATTRIBUTE,
    CODEBOOK_BUFFER,
    MAX_CLUSTERS,
    ClusteredWeight,
    WeightClusterConfig,
    bake_clusters,
    cluster_indices,
    cluster_layer,
    cluster_model,
    cluster_report,
    index_bits,
    weight_cluster,
)

__all__ = [
    "conv_batchnorm_pairs",
    "fold_batchnorm",
    "INITIALISATIONS",
    "kmeans_1d",
    "kmeans_plus_plus_centroids",
    "linear_centroids",
    "CLUSTER_REPORT_ATTRIBUTE",
    "CODEBOOK_BUFFER",
    "MAX_CLUSTERS",
    "ClusteredWeight",
    "WeightClusterConfig",
    "bake_clusters",
    "cluster_indices",
    "cluster_layer",
    "cluster_model",
    "cluster_report",
    "index_bits",
    "weight_cluster",
]
