"""One-dimensional k-means of a layer's weights (Lloyd's algorithm), with two initialisations.

Deep Compression (Han, Mao & Dally 2016, section 3.2) clusters the weights of each layer with
k-means and found *linear* initialisation -- centroids evenly spaced between the smallest and
the largest weight -- best, because it keeps centroids on the rare large weights that matter
most. k-means++ (Arthur & Vassilvitskii 2007) seeds each centroid with probability
proportional to its squared distance from those already chosen; TF-MOT offers both.

In one dimension every cluster is an interval, so the assignment step is a binary search
against the midpoints of the sorted centroids (``O(n log k)``).

Pure NumPy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["INITIALISATIONS", "linear_centroids", "kmeans_plus_plus_centroids", "kmeans_1d"]

INITIALISATIONS = ("linear", "kmeans++")
"""Names of the centroid initialisations :func:`kmeans_1d` accepts."""


def linear_centroids(values: np.ndarray, n_clusters: int) -> np.ndarray:
    """``n_clusters`` centroids evenly spaced over ``[min(values), max(values)]`` (Han et al.)."""
    return np.linspace(values.min(), values.max(), n_clusters)


def kmeans_plus_plus_centroids(values: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): D^2 sampling, sorted.

    The first centroid is a uniformly drawn value; each next one is a value drawn with
    probability proportional to its squared distance from the nearest chosen centroid.
    """
    rng = np.random.default_rng(seed)
    chosen = [values[rng.integers(len(values))]]
    distances = (values - chosen[0]) ** 2
    for _ in range(1, n_clusters):
        total = distances.sum()
        if total == 0:
            break  # every value already coincides with a centroid
        chosen.append(values[rng.choice(len(values), p=distances / total)])
        distances = np.minimum(distances, (values - chosen[-1]) ** 2)
    return np.sort(np.asarray(chosen))


def _assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centroids`` for every value."""
    return np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)


def kmeans_1d(
    values: np.ndarray,
    n_clusters: int,
    init: str = "linear",
    max_iterations: int = 30,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster scalar ``values`` into at most ``n_clusters`` groups with Lloyd's algorithm.

    Parameters
    ----------
    values : np.ndarray
        The values (flattened), e.g. a layer's non-zero weights.
    n_clusters : int
        Largest number of clusters (>= 1). Fewer come back when the values have fewer distinct
        entries or a cluster ends empty (an empty cluster would only waste an index code).
    init : {"linear", "kmeans++"}
        Centroid initialisation (see the module docstring).
    max_iterations : int
        Upper bound on Lloyd iterations; it stops earlier when no assignment changes.
    seed : int
        Seeds the k-means++ draws.

    Returns
    -------
    centroids : np.ndarray
        float64, sorted ascending; each the mean of its cluster's values.
    labels : np.ndarray
        int64 index into ``centroids`` of each value (same shape as ``values.ravel()``).
    """
    if init not in INITIALISATIONS:
        raise ValueError(f"kmeans_1d: init must be one of {INITIALISATIONS}, got {init!r}.")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) \
            or n_clusters < 1:
        raise ValueError(f"kmeans_1d: n_clusters must be an integer >= 1, got {n_clusters!r}.")
    if max_iterations < 1:
        raise ValueError(f"kmeans_1d: max_iterations must be >= 1, got {max_iterations}.")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("kmeans_1d: there are no values to cluster.")
    n_clusters = min(int(n_clusters), len(np.unique(values)))
    if init == "linear":
        centroids = linear_centroids(values, n_clusters)
    else:
        centroids = kmeans_plus_plus_centroids(values, n_clusters, seed)
    labels = _assign(values, centroids)
    for _ in range(max_iterations):
        counts = np.bincount(labels, minlength=len(centroids))
        sums = np.bincount(labels, weights=values, minlength=len(centroids))
        occupied = counts > 0
        centroids = np.sort(np.where(occupied, sums / np.maximum(counts, 1), centroids))
        new_labels = _assign(values, centroids)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    counts = np.bincount(labels, minlength=len(centroids))
    kept = np.flatnonzero(counts)
    centroids = np.bincount(labels, weights=values, minlength=len(centroids))[kept] / counts[kept]
    remap = np.cumsum(counts > 0) - 1
    return centroids, remap[labels]
