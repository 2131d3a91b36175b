"""``satcompress`` commands: ``train`` a base model, ``compress`` it with a recipe, ``demo``.

Heavy imports (torch, the pipeline) happen inside the commands so ``--help`` is instant.
Errors the user can fix (unknown task, missing data, unreadable model) are printed as one
clear line and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from satcompress.cli.classify_alerts import classify_alerts
from satcompress.cli.common import TASK_HELP, check_task, console, fail
from satcompress.cli.search import search
from satcompress.cli.verify import verify
from satcompress.data import DataFileError
from satcompress.tasks.registry import get_task

__all__ = ["app", "main"]

app = typer.Typer(
    help="Compress trained PyTorch models to fit satellites and alert brokers.",
    no_args_is_help=True,
    add_completion=False,
)

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
    recipe: str = typer.Option("assembled", help="Shipped recipe name or a recipe TOML file."),
    budget: str = typer.Option("", help="Hard limits, e.g. max_bytes=40kB,max_metric_drop=tss:0.01"),
    out: Path = typer.Option(Path("out/compress"), help="Output folder (resumed if it exists)."),
    seed: int = typer.Option(0, help="Seed of the split and the base model."),
    model: Path = typer.Option(None, help="Your trained model: a state dict, TorchScript or "
                               "torch.export file (never a pickled module)."),
    data: Path = typer.Option(None, help="Your data: CSV/Parquet (tabular or light curves) "
                              "or .npz with x and y."),
    architecture: str = typer.Option(None, help="Architecture of --model: residual_mlp or t2."),
    metric: str = typer.Option("accuracy", help="Metric of --data: accuracy, macro_f1, "
                               "weighted_log_loss or tss (two classes)."),
    label_column: str = typer.Option("label", help="Label column of a --data table."),
    group_column: str = typer.Option(None, help="Column of --data whose rows stay in one split."),
    n_heads: int = typer.Option(4, help="Attention heads of a t2 --model."),
) -> None:
    """Compress a model with a recipe, measuring every stage against the budget.

    Either a reference task's base model (--task) or your own (--model with --data).
    """
    from satcompress.pipeline.base_model import cached_base_model
    from satcompress.pipeline.budget import Budget
    from satcompress.pipeline.recipe import Recipe
    from satcompress.pipeline.runner import BudgetNotMet, run_recipe
    from satcompress.pipeline.user_model import user_trained_model
    from satcompress.report import rich_table_by_column

    if (task is None) == (model is None and data is None) or (model is None) != (data is None):
        fail("Give either --task NAME (a reference task) or both --model FILE and --data FILE "
             "(your own model and data).")
    if task is not None:
        check_task(task)
    try:
        chosen_recipe, limits = Recipe.load(recipe), Budget.parse(budget)
        if task is not None:
            trained = cached_base_model(task, seed=seed, progress=True)
        else:
            with console.status("reading your model and data"):
                trained = user_trained_model(model, data, architecture=architecture,
                                             metric=metric, label_column=label_column,
                                             group_column=group_column, n_heads=n_heads,
                                             seed=seed)
        with console.status("compressing") as status:
            result = run_recipe(trained, chosen_recipe, limits, out, seed=seed,
                                on_stage=lambda name: status.update(f"stage {name}"))
    except BudgetNotMet as failure:
        console.print(rich_table_by_column(failure.result.rows(),
                                           title=f"{trained.task.name}: {recipe}"))
        fail(str(failure))
    except (DataFileError, ValueError) as error:
        fail(str(error))
    console.print(rich_table_by_column(result.rows(), title=f"{trained.task.name}: {recipe}"))
    check = result.verification
    console.print(f"all limits met; wrote {out / 'model.sca'} ({check.size_bytes} bytes; "
                  f"{check.differing_predictions} of {check.examples} test predictions differ "
                  f"from PyTorch's), {out / 'stages.json'} and {out / 'summary.md'}")


app.command(name="search")(search)
app.command(name="verify")(verify)
app.command(name="classify-alerts")(classify_alerts)


def main() -> None:
    """Entry point of the ``satcompress`` console script."""
    app()
