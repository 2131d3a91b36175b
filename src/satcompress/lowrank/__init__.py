"""Low-rank factorization: truncated SVD of Linear layers, Tucker-2 and CP of convolutions.

Importing this package registers the stage ``low_rank`` (:class:`LowRankConfig`). Factored
layers become ``nn.Sequential`` chains of plain ``nn.Linear``/``nn.Conv*d`` layers (only where
that saves parameters), with ranks chosen by energy kept, a fixed rank, or a parameter or MAC
budget (:func:`select_ranks`), and the model is fine-tuned afterwards.
"""

from satcompress.lowrank.conv import cp_conv, cp_parameters, tucker2_conv, tucker2_parameters
from satcompress.lowrank.plan import (
    CONV_METHODS,
    RANK_CRITERIA,
    FactorizableLayer,
    RankPlan,
    factorizable_layers,
    factorize_model,
    select_ranks,
)
from satcompress.lowrank.stage import (
    LOWRANK_REPORT_ATTRIBUTE,
    LowRankConfig,
    low_rank,
    lowrank_report,
)
from satcompress.lowrank.svd import (
    cumulative_energy,
    factorize_linear,
    factorize_pointwise_conv,
    rank_for_energy,
    truncated_svd,
)

__all__ = [
    "cp_conv",
    "cp_parameters",
    "tucker2_conv",
    "tucker2_parameters",
    "CONV_METHODS",
    "RANK_CRITERIA",
    "FactorizableLayer",
    "RankPlan",
    "factorizable_layers",
    "factorize_model",
    "select_ranks",
    "LOWRANK_REPORT_ATTRIBUTE",
    "LowRankConfig",
    "low_rank",
    "lowrank_report",
    "cumulative_energy",
    "factorize_linear",
    "factorize_pointwise_conv",
    "rank_for_energy",
    "truncated_svd",
]
