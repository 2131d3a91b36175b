"""The pruning family: remove weights, channels and heads from a trained model.

Importing this package registers four stages (see :mod:`satcompress.stages`):

``magnitude_prune`` (:class:`MagnitudePruneConfig`)
    Unstructured global magnitude pruning to an exact target sparsity, one-shot or gradual
    (Zhu & Gupta 2017), with masked fine-tuning (Han et al. 2015).
``std_threshold_prune`` (:class:`StdThresholdPruneConfig`)
    Unstructured per-layer pruning below ``quality x std`` of the layer (Han et al. 2015).
``structured_prune`` (:class:`StructuredPruneConfig`)
    Physically removes hidden neurons, residual-stream features and attention heads with
    Torch-Pruning's dependency graph, to a target MAC reduction, a channel ratio, or one
    ratio per named group.
``drop_bound_prune`` (:class:`DropBoundPruneConfig`)
    Structured pruning group by group, each as far as a bound on the validation-metric drop
    allows (Huang et al. 2018's drop bound, grid search instead of an RL agent).

Every stage returns a new model carrying a JSON-able report of what it did in the attribute
``prune_report_`` (:func:`prune_report` returns a copy): the sparsities, the ratio used or,
for the drop-bound stage, the ratio found for each group. Unstructured pruning leaves zeros in
dense tensors (the file does not shrink; :func:`sparse_storage_bytes` gives what a sparse
encoding would take); structured pruning gives a smaller dense model.
"""

from satcompress.prune._common import PRUNE_REPORT_ATTRIBUTE, prune_report
from satcompress.prune.drop_bound import SEARCH_STRATEGIES, DropBoundPruneConfig, drop_bound_prune
from satcompress.prune.magnitude import (
    MagnitudePruneConfig,
    StdThresholdPruneConfig,
    WeightMasks,
    finetune_with_masks,
    global_magnitude_masks,
    weights_check,
    layer_thresholds,
    magnitude_prune,
    polynomial_sparsity,
    prunable_weights,
    sparse_storage_bytes,
    std_threshold_prune,
    threshold_masks,
)
from satcompress.prune.structured import (
    GROUP_KINDS,
    IMPORTANCE_CRITERIA,
    GroupPruneSettings,
    PrunableGroup,
    StructuredPruneConfig,
    StructuredPruner,
    structured_prune,
    units_to_remove,
)

__all__ = [
    "PRUNE_REPORT_ATTRIBUTE",
    "prune_report",
    # unstructured
    "MagnitudePruneConfig",
    "StdThresholdPruneConfig",
    "WeightMasks",
    "finetune_with_masks",
    "global_magnitude_masks",
    "weights_check",
    "layer_thresholds",
    "magnitude_prune",
    "polynomial_sparsity",
    "prunable_weights",
    "sparse_storage_bytes",
    "std_threshold_prune",
    "threshold_masks",
    # structured
    "GROUP_KINDS",
    "IMPORTANCE_CRITERIA",
    "GroupPruneSettings",
    "PrunableGroup",
    "StructuredPruneConfig",
    "StructuredPruner",
    "structured_prune",
    "units_to_remove",
    # drop bound
    "SEARCH_STRATEGIES",
    "DropBoundPruneConfig",
    "drop_bound_prune",
]
