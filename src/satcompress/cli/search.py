"""``satcompress search``: find per-layer compression settings under a budget."""

from __future__ import annotations

from pathlib import Path

import typer

from satcompress.cli import user_options
from satcompress.cli.common import TASK_HELP, check_task, console, fail

__all__ = ["search"]


def search(
    task: str = typer.Option(None, help=TASK_HELP + " Or give --model and --data instead."),
    budget: str = typer.Option(..., help="Hard limits, e.g. max_bytes=300kB,max_metric_drop=tss:0.02"),
    trials: int = typer.Option(40, help="Finished trials the study should hold (resumes up to it)."),
    workers: int = typer.Option(1, help="Worker processes running trials of the one study."),
    storage: str = typer.Option(None, help="Study storage: sqlite:///path.db (default OUT/study.db) "
                                           "or postgresql://user@host:port/db to share it."),
    study_name: str = typer.Option(None, help="Study name (default TASK-STRATEGY); the same name "
                                              "in the same storage resumes the study."),
    strategy: str = typer.Option("whole", help="whole: one study over every layer; divide: "
                                               "search blocks of layers, then combine."),
    out: Path = typer.Option(Path("out/search"), help="Output folder."),
    seed: int = typer.Option(0, help="Seed of the split, base model, sampler and stages."),
    fec: bool = typer.Option(True, "--fec/--no-fec", help="Reed-Solomon error correction in "
                             "the artifacts (about 3.3% more bytes, counted in max_bytes)."),
    target: str = typer.Option(None, help="Target profile (samv71, cortex-m4, host): its flash "
                               "and RAM as max_bytes/max_ram_bytes unless the budget gives "
                               "them; the chosen model is judged on its built firmware."),
    folds: int = typer.Option(None, min=3, help="Judge the delivered recipe over K grouped "
                              "folds too, as compress --folds judges a recipe (each fold with "
                              "its own base model; the metric-drop limit on the mean drop), "
                              "into OUT/folds/. Reference tasks only. Default: one split."),
    seeds: int = typer.Option(1, min=1, help="With --folds: seeds per fold (--seed, --seed+1, "
                              "...), each reshuffling the folds and retraining."),
    rank_candidates: int = typer.Option(4, min=0, help="Reference tasks: rank the best N "
                                        "candidates again over grouped folds of the training "
                                        "data, each fold with its own base model, before the "
                                        "final run (OUT/ranking/); 0: the validation split's "
                                        "order."),
    rank_folds: int = typer.Option(4, min=3, help="The folds of that ranking."),
    protect: str = typer.Option("", help="Protections against upsets in RAM the chosen recipe "
                                "records, comma-separated (ranges, tables, compact, "
                                "compact-vulnerable, scrub); a "
                                "budget's max_sdc_probability is judged on that artifact."),
    model: str = user_options.MODEL,
    weights: Path = user_options.WEIGHTS,
    data: Path = user_options.DATA,
    val_data: Path = user_options.VAL_DATA,
    test_data: Path = user_options.TEST_DATA,
    architecture: str = user_options.ARCHITECTURE,
    metric: str = user_options.METRIC,
    label_column: str = user_options.LABEL_COLUMN,
    group_column: str = user_options.GROUP_COLUMN,
    split_column: str = user_options.SPLIT_COLUMN,
    survey: str = user_options.SURVEY,
    standardize: bool = user_options.STANDARDIZE,
    n_heads: int = user_options.N_HEADS,
    run_code_in_model_file: bool = user_options.RUN_CODE,
) -> None:
    """Search per-layer pruning ratios, bit widths, cluster counts and ranks under a budget.

    Writes the Pareto front (front.md, front.png), the chosen model's run (model/) and the
    recipe that reproduces it (recipe.toml) into OUT; with --folds, that recipe over the
    folds (folds/).
    """
    mine = user_options.from_arguments(task, locals())
    if task is not None:
        check_task(task)
    from satcompress.data import DataFileError
    from satcompress.pipeline.folds import FOLDS_FILE, FoldsBudgetNotMet
    from satcompress.pipeline.result import BudgetNotMet
    from satcompress.report import rich_table
    from satcompress.search import EmptyFront, SearchSettings, front_rows, run_search
    from satcompress.tasks.registry import get_task

    if trials < 1 or workers < 1:
        fail("--trials and --workers must be at least 1.")
    if folds is None and seeds > 1:
        fail("--seeds repeats the evaluation over grouped folds; give --folds K too (e.g. 5).")
    try:
        profile = None
        if target is not None:
            from satcompress.firmware import get_target

            profile = get_target(target)
        if task is None:
            with console.status("reading your model and data"):
                subject = mine.trained(seed)
            searched = subject.task
        else:
            subject, searched = task, get_task(task)
        with console.status(f"searching ({trials} trials, {workers} worker(s))"):
            result = run_search(subject, budget, trials, out, workers=workers, storage=storage,
                                study_name=study_name, strategy=strategy, seed=seed,
                                settings=SearchSettings.for_task(
                                    searched, seed=seed, fec=fec, protect=tuple(
                                        name for name in protect.split(",") if name)),
                                target=profile,
                                folds=folds, seeds=range(seed, seed + seeds),
                                rank_candidates=rank_candidates, rank_folds=rank_folds)
    except FoldsBudgetNotMet as failure:
        console.print(rich_table(failure.result.rows(), title=failure.result.mode))
        fail(f"{failure} (the search: {out / 'front.md'})")
    except (EmptyFront, BudgetNotMet) as failure:
        fail(f"{failure} (trials and front: {out / 'front.md'})")
    except (DataFileError, ValueError, RuntimeError) as error:
        fail(str(error))
    metric = searched.primary_metric
    console.print(rich_table(front_rows(result.front, metric, result.base.theoretical_bytes),
                             title=f"{result.task}: Pareto front (validation metric)"))
    if result.ranking is not None:
        console.print(rich_table([{key: value for key, value in row.items() if key != "folder"}
                                  for row in result.ranking.rows()],
                                 title=f"best candidates ranked over "
                                 f"{result.ranking.n_folds} folds of the training data"))
    chosen, final = result.chosen, result.run.final
    console.print(
        f"chosen trial {chosen.label}: {final.theoretical_bytes:,} bytes, test {metric} "
        f"{final.metrics[metric]:.4f} (base {result.run.measurements[0].metrics[metric]:.4f}); "
        f"recipe {out / 'recipe.toml'}, model run {out / 'model'}, front {out / 'front.md'}"
    )
    if result.folds is not None:
        console.print(rich_table(result.folds.rows(), title=f"chosen recipe, {result.folds.mode}"))
        console.print(f"over folds: all limits met; {result.folds.interval.describe()}; wrote "
                      f"{result.folds.out_dir / FOLDS_FILE}")
