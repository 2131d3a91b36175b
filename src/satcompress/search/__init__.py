"""Budget-driven automatic compression search.

Choosing per-layer pruning ratios, bit widths, cluster counts and ranks by hand is hard; this
package searches them. The space is derived from the model by the stage families' own layer
discovery (:mod:`.space`); every trial is a :class:`~satcompress.pipeline.recipe.Recipe` of
registered stages, so the result is a recipe ``satcompress compress`` reproduces. The search
is multi-objective -- validation metric, artifact bytes, MACs -- with the budget's hard
limits as constraints of Optuna's NSGA-II (:mod:`.study`); cheap proxies screen trials before
the fine-tuned full evaluation (:mod:`.evaluate`). A divide-and-conquer variant searches
blocks of layers separately and combines their fronts (:mod:`.divide`). The best candidates
are ranked again over grouped folds of the training data before one is delivered
(:mod:`.rank`). Studies
live in SQLite or PostgreSQL, so they resume and several worker processes or machines can
share one. Entry point: :func:`run_search` (CLI: ``satcompress search``).
"""

from satcompress.search.divide import BlockOption, block_options, combine, divide_and_conquer
from satcompress.search.evaluate import (
    OBJECTIVES,
    RESOURCE_LIMITS,
    Evaluation,
    Evaluator,
    constraint_values,
    objective_directions,
)
from satcompress.search.front import (
    EmptyFront,
    TrialRecord,
    closest_trial,
    difference_standard_error,
    empty_front_message,
    front_rows,
    hypervolume,
    one_standard_error_choice,
    pareto_front,
    plot_front,
    trial_records,
)
from satcompress.search.rank import RANKING_DIR, RankedCandidate, Ranking, rank_over_folds
from satcompress.search.students import StudentStore
from satcompress.search.run import STRATEGIES, SearchResult, default_storage, run_search
from satcompress.search.settings import CODECS, SearchSettings, parse_codec
from satcompress.search.space import DECISION_KINDS, Decision, SearchSpace, derive_space
from satcompress.search.study import (
    FINISHED,
    StudyJob,
    check_storage,
    finished_trials,
    open_storage,
    open_study,
    run_study,
    run_worker,
)

__all__ = [
    "BlockOption",
    "block_options",
    "combine",
    "divide_and_conquer",
    "OBJECTIVES",
    "RESOURCE_LIMITS",
    "Evaluation",
    "Evaluator",
    "constraint_values",
    "objective_directions",
    "EmptyFront",
    "TrialRecord",
    "closest_trial",
    "difference_standard_error",
    "one_standard_error_choice",
    "RANKING_DIR",
    "RankedCandidate",
    "Ranking",
    "rank_over_folds",
    "StudentStore",
    "empty_front_message",
    "front_rows",
    "hypervolume",
    "pareto_front",
    "plot_front",
    "trial_records",
    "STRATEGIES",
    "SearchResult",
    "default_storage",
    "run_search",
    "CODECS",
    "SearchSettings",
    "parse_codec",
    "DECISION_KINDS",
    "Decision",
    "SearchSpace",
    "derive_space",
    "FINISHED",
    "StudyJob",
    "check_storage",
    "finished_trials",
    "open_storage",
    "open_study",
    "run_study",
    "run_worker",
]
