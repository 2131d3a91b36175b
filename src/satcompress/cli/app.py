"""``satcompress`` commands: ``train`` a base model, ``compress`` it with a recipe, ``demo``.

Heavy imports (torch, the pipeline) happen inside the commands so ``--help`` is instant.
Errors the user can fix (unknown task, missing data, unreadable model) are printed as one
clear line and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from satcompress.cli import user_options
from satcompress.cli.classify_alerts import classify_alerts
from satcompress.cli.common import TASK_HELP, check_task, console, fail
from satcompress.cli.export_c import TARGET_HELP, export_c
from satcompress.cli.inject import inject
from satcompress.cli.predict import predict
from satcompress.cli.search import search
from satcompress.cli.verify import verify
from satcompress.data import DataFileError
from satcompress.firmware.build import ToolchainError
from satcompress.tasks.registry import GENERAL_RECIPE, get_task

if TYPE_CHECKING:
    from satcompress.firmware.targets import Target
    from satcompress.pipeline.budget import Budget
    from satcompress.pipeline.recipe import Recipe

__all__ = ["app", "main"]

app = typer.Typer(
    help="Compress trained PyTorch models to fit satellites and alert brokers.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _global_options(
    jobs: int = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes for the "
                             "parallel steps (GP preprocessing); default: $SATCOMPRESS_JOBS, "
                             "else every core. Give it before the command."),
) -> None:
    """Compress trained PyTorch models to fit satellites and alert brokers."""
    from satcompress.progress import set_default_jobs, set_default_progress

    set_default_jobs(jobs)
    set_default_progress(True)  # long steps report: a live line, or log lines off a terminal

@app.command()
def train(
    task: str = typer.Option(..., help=TASK_HELP),
    out: Path = typer.Option(Path("models"), help="Folder for the model file and its metrics."),
    seed: int = typer.Option(0, help="Seed of the split, initialisation and shuffling."),
    max_epochs: int = typer.Option(None, help="Override the task's epoch limit."),
) -> None:
    """Train a task's base model; save it (weights-only) with its test metrics and baseline."""
    check_task(task)
    from satcompress.fileio import atomic_write_text
    from satcompress.pipeline.base_model import save_model, train_base_model
    from satcompress.report import rich_table
    from satcompress.training import TrainConfig

    reference = get_task(task)
    settings = dict(reference.train_settings, seed=seed)
    if max_epochs is not None:
        settings["max_epochs"] = max_epochs
    try:
        with console.status(f"loading {task} data"):
            data = reference.load(seed=seed)
        trained = train_base_model(task, seed, TrainConfig(**settings), progress=True, data=data)
        with console.status("fitting the classical baseline"):
            baseline = reference.baseline(data, seed=seed, model=trained.model)
    except (DataFileError, ValueError) as error:
        fail(str(error))
    metadata = {"task": task, "seed": seed, "width_multiplier": 1.0, "depth_multiplier": 1.0,
                "train_settings": settings, "metrics": trained.metrics, "baseline": baseline}
    model_path = save_model(trained.model, out / f"{task}.pt", metadata)
    atomic_write_text(out / f"{task}.json", json.dumps(metadata, indent=2) + "\n")
    rows = [{"model": "base", **trained.metrics}]
    console.print(rich_table(rows, title=f"{task}: test metrics"))
    console.print(rich_table([{"baseline": k, "value": v} for k, v in baseline.items()]))
    console.print(f"saved {model_path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("out"), help="Output folder."),
    task: str = typer.Option("flares", help=TASK_HELP),
    seed: int = typer.Option(0, help="Seed of the split and training."),
) -> None:
    """Train (or reuse) the base model, measure it, write measurement.json and summary.md."""
    check_task(task)
    from satcompress.measure import Measurement
    from satcompress.pipeline.demo import run_demo
    from satcompress.report import rich_table, rich_table_by_column

    try:
        result = run_demo(out, task_name=task, seed=seed, progress=True)
    except (DataFileError, ValueError) as error:
        fail(str(error))
    rows = [Measurement.from_dict(stage).summary_row() for stage in result["stages"]]
    console.print(rich_table_by_column(rows, title=f"satcompress demo: {task}"))
    console.print(rich_table([{"baseline": k, "value": v} for k, v in result["baseline"].items()]))
    console.print(f"wrote {out / task / 'measurement.json'} and {out / task / 'summary.md'}")


@app.command()
def compress(
    task: str = typer.Option(None, help=TASK_HELP + " Or give --model and --data instead."),
    recipe: str = typer.Option(None, help="Shipped recipe name or a recipe TOML file. Default: "
                               "the one tuned on the task (flares: assembled, transients: "
                               "assembled-t2), for your own model `general`."),
    budget: str = typer.Option("", help="Hard limits, e.g. max_bytes=40kB,max_metric_drop=tss:0.01"),
    out: Path = typer.Option(Path("out/compress"), help="Output folder (resumed if it exists)."),
    seed: int = typer.Option(0, help="Seed of the split and the base model."),
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
    fec: bool | None = typer.Option(
        None, "--fec/--no-fec", help="Reed-Solomon error correction in the artifact (corrects "
        "up to 4 bad bytes per 255; about 3.3% more bytes, counted in max_bytes). Default: the "
        "recipe's fec setting, on unless it says fec = false."),
    target: str = typer.Option(None, help=TARGET_HELP + " Sets max_bytes/max_ram_bytes to "
                               "its flash/RAM unless the budget gives them, judges them on the "
                               "built firmware and writes its C beside the artifact "
                               "(OUT/firmware)."),
    folds: int = typer.Option(None, min=3, help="Judge the recipe over K grouped folds (by "
                              "active region / object), each with its own base model, into "
                              "OUT/fold{k}of{K}-seed{s}/: the metric-drop limit on the mean "
                              "drop, resources on the worst run; every stage on every run "
                              "(OUT/folds.json, OUT/report.html). Reference tasks only. "
                              "Default: one split."),
    seeds: int = typer.Option(1, min=1, help="With --folds: seeds per fold (--seed, --seed+1, "
                              "...), each reshuffling the folds and retraining."),
) -> None:
    """Compress a model with a recipe, measuring every stage against the budget.

    Either a reference task's base model (--task) or your own (--model with --data).
    """
    from satcompress.pipeline.base_model import cached_base_model
    from satcompress.pipeline.budget import Budget
    from satcompress.pipeline.recipe import Recipe
    from satcompress.pipeline.result import BudgetNotMet
    from satcompress.pipeline.runner import run_recipe
    from satcompress.report import rich_table_by_column

    mine = user_options.from_arguments(task, locals())
    if task is not None:
        check_task(task)
    if recipe is None:
        recipe = GENERAL_RECIPE if task is None else get_task(task).recipe
    try:
        chosen_recipe, limits = Recipe.load(recipe), Budget.parse(budget)
        profile = None
        if target is not None:
            from satcompress.firmware import get_target
            from satcompress.pipeline.firmware import target_budget

            profile = get_target(target)
            limits = target_budget(limits, profile)
        if fec is not None:
            chosen_recipe = dataclasses.replace(chosen_recipe, fec=fec)
        if folds is not None or seeds > 1:
            _compress_folds(task, chosen_recipe, limits, out, folds, range(seed, seed + seeds),
                            profile)
            return
        if task is not None:
            trained = cached_base_model(task, seed=seed, progress=True)
        else:
            with console.status("reading your model and data"):
                trained = mine.trained(seed)
        with console.status("compressing") as status:
            result = run_recipe(trained, chosen_recipe, limits, out, seed=seed,
                                on_stage=lambda name: status.update(f"stage {name}"),
                                target=profile)
    except BudgetNotMet as failure:
        console.print(rich_table_by_column(failure.result.rows(),
                                           title=f"{trained.task.name}: {recipe}"))
        _print_firmware(failure.result.firmware)
        fail(str(failure))
    except (DataFileError, ValueError, ToolchainError) as error:
        fail(str(error))
    console.print(rich_table_by_column(result.rows(), title=f"{trained.task.name}: {recipe}"))
    _print_firmware(result.firmware)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    check = result.verification
    protection = (f"{check.fec_bytes} of them Reed-Solomon parity" if check.fec_parity
                  else "no error correction")
    console.print(f"all limits met; wrote {out / 'model.sca'} ({check.size_bytes} bytes, "
                  f"{protection}; {check.differing_predictions} of {check.examples} test "
                  f"predictions differ from PyTorch's), {out / 'stages.json'} and "
                  f"{out / 'summary.md'}")


def _compress_folds(task: str | None, recipe: Recipe, limits: Budget, out: Path,
                    folds: int | None, seeds: range, profile: Target | None) -> None:
    """``compress --folds K --seeds S``: :func:`satcompress.pipeline.folds.run_folds`."""
    from satcompress.pipeline.folds import FOLDS_FILE, FoldsBudgetNotMet, run_folds
    from satcompress.report import rich_table

    if task is None:
        fail("--folds retrains the base model on every fold, which only a reference task can "
             "(--task); your own model is judged on one split, with a paired bootstrap interval "
             "of the metric drop over test groups (stages.json, drop_interval).")
    if folds is None:
        fail("--seeds repeats the evaluation over grouped folds; give --folds K too (e.g. 5).")
    try:
        with console.status("compressing over folds") as status:
            result = run_folds(task, recipe, limits, out, folds=folds, seeds=seeds,
                               on_stage=status.update, target=profile, progress=True)
    except FoldsBudgetNotMet as failure:
        console.print(rich_table(failure.result.rows(), title=failure.result.mode))
        fail(str(failure))
    console.print(rich_table(result.rows(), title=f"{task}: {recipe.name}, {result.mode}"))
    console.print(f"all limits met; {result.interval.describe()}; wrote {out / FOLDS_FILE}, "
                  f"{out / 'summary.md'} and {out / 'report.html'}")


def _print_firmware(firmware: dict | None) -> None:
    """The firmware table of a run with a target."""
    if firmware:
        from satcompress.firmware.export import ExportReport
        from satcompress.report import rich_table

        report = ExportReport(**firmware)
        console.print(rich_table(report.rows(), title=f"firmware ({report.folder})"))


app.command(name="search")(search)
app.command(name="verify")(verify)
app.command(name="classify-alerts")(classify_alerts)
app.command(name="export-c")(export_c)
app.command(name="inject")(inject)
app.command(name="predict")(predict)


def main() -> None:
    """Entry point of the ``satcompress`` console script."""
    app()
