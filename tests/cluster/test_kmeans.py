"""One-dimensional k-means: initialisations and the Lloyd fixed point, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from satcompress.cluster import kmeans_1d, kmeans_plus_plus_centroids, linear_centroids


def test_linear_initialisation_spaces_centroids_evenly_between_the_extremes():
    values = np.array([-2.0, 0.3, 0.1, 6.0])
    assert np.allclose(linear_centroids(values, 5), [-2.0, 0.0, 2.0, 4.0, 6.0])


def test_kmeans_plus_plus_draws_distinct_data_points_reproducibly():
    values = np.random.default_rng(0).normal(size=500)
    first = kmeans_plus_plus_centroids(values, 8, seed=3)
    assert np.array_equal(first, kmeans_plus_plus_centroids(values, 8, seed=3))
    assert len(np.unique(first)) == 8 and np.isin(first, values).all()


@pytest.mark.parametrize("init", ["linear", "kmeans++"])
def test_result_is_a_lloyd_fixed_point(init):
    values = np.random.default_rng(1).standard_t(3, size=2000)
    centroids, labels = kmeans_1d(values, 16, init=init, max_iterations=200, seed=0)
    assert np.all(np.diff(centroids) > 0)
    nearest = np.argmin(np.abs(values[:, None] - centroids[None, :]), axis=1)
    assert np.array_equal(labels, nearest)
    for cluster, centroid in enumerate(centroids):
        assert np.isclose(centroid, values[labels == cluster].mean())


def test_fewer_distinct_values_than_clusters_gives_one_cluster_per_value():
    values = np.array([3.0, 1.0, 3.0, 1.0, 2.0])
    centroids, labels = kmeans_1d(values, 16)
    assert np.array_equal(centroids, [1.0, 2.0, 3.0])
    assert np.array_equal(centroids[labels], values)


@pytest.mark.parametrize("kwargs", [{"n_clusters": 0}, {"n_clusters": 4, "init": "forgy"},
                                    {"n_clusters": 4, "max_iterations": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        kmeans_1d(np.arange(10.0), **kwargs)
