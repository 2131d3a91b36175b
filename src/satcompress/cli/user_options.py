"""The ``--model/--data`` options ``compress`` and ``search`` share: your own model and data."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["UserOptions", "from_arguments", "MODEL", "WEIGHTS", "DATA", "VAL_DATA", "TEST_DATA", "ARCHITECTURE",
           "METRIC", "LABEL_COLUMN", "GROUP_COLUMN", "SPLIT_COLUMN", "SURVEY", "STANDARDIZE",
           "N_HEADS", "RUN_CODE"]

MODEL = typer.Option(None, help="Your trained model: package.module:function (your code, "
                     "building the model; with --weights), a state dict (with --architecture) "
                     "or a `satcompress train` file; never a pickled module.")
WEIGHTS = typer.Option(None, help="Trained weights of a --model package.module:function: "
                       "torch.save(model.state_dict(), FILE).")
DATA = typer.Option(None, help="Your data: CSV/Parquet (tabular or light curves) or .npz with x "
                    "and y; the training data when --val-data and --test-data are given.")
VAL_DATA = typer.Option(None, help="Your validation data (with --test-data): your own split.")
TEST_DATA = typer.Option(None, help="Your test data (with --val-data): your own split.")
ARCHITECTURE = typer.Option(None, help="Reference architecture of a state-dict --model: "
                            "residual_mlp or t2.")
METRIC = typer.Option("accuracy", help="Metric of --data: accuracy, macro_f1, "
                      "weighted_log_loss or tss (two classes).")
LABEL_COLUMN = typer.Option("label", help="Label column of a --data table.")
GROUP_COLUMN = typer.Option(None, help="Column of --data whose rows stay in one split (an "
                            "active region, an object); without it or --split-column rows are "
                            "split independently (a warning says so).")
SPLIT_COLUMN = typer.Option(None, help="Column of --data naming each row's split: train, val "
                            "(or validation), test.")
SURVEY = typer.Option("ztf", help="Survey of a light-curve --data table: ztf or lsst (their g "
                      "and r passbands).")
STANDARDIZE = typer.Option(False, "--standardize", help="Your model was trained on features "
                           "standardised with the training split's mean and std (as "
                           "scikit-learn's StandardScaler): put that standardisation in the "
                           "model, so the artifact takes the raw features.")
N_HEADS = typer.Option(4, help="Attention heads of a t2 --model.")
RUN_CODE = typer.Option(False, "--run-code-in-model-file", help="Also accept a TorchScript or "
                        "torch.export (.pt2) model file, whose loading RUNS CODE the file holds: "
                        "only for files you wrote.")


def from_arguments(task: str | None, arguments: dict) -> "UserOptions":
    """The user options among a command's ``arguments`` (its ``locals()``); exits with the
    one-line error when they do not name one model and its data (or a task)."""
    from satcompress.cli.common import fail

    mine = UserOptions(*(arguments[name] for name in (
        "model", "weights", "data", "val_data", "test_data", "architecture", "metric",
        "label_column", "group_column", "split_column", "survey", "standardize", "n_heads",
        "run_code_in_model_file")))
    problem = mine.check(task)
    if problem:
        fail(problem)
    return mine


class UserOptions:
    """The values of the options above, turned into a trained model with its task."""

    def __init__(self, model: str | None, weights: Path | None, data: Path | None,
                 val_data: Path | None, test_data: Path | None, architecture: str | None,
                 metric: str, label_column: str, group_column: str | None,
                 split_column: str | None, survey: str, standardize: bool, n_heads: int,
                 run_code: bool) -> None:
        self.model, self.weights, self.data = model, weights, data
        self.options = dict(weights=weights, architecture=architecture, metric=metric,
                            label_column=label_column, group_column=group_column,
                            split_column=split_column, val_path=val_data, test_path=test_data,
                            survey=survey, standardize=standardize, n_heads=n_heads,
                            run_code_in_model_file=run_code)

    @property
    def given(self) -> bool:
        return self.model is not None or self.data is not None

    def check(self, task: str | None) -> str | None:
        """Why the options do not name one model and its data (None when they do)."""
        if (task is None) == (not self.given) or (self.model is None) != (self.data is None):
            return ("Give either --task NAME (a reference task) or both --model and --data "
                    "(your own model and data).")
        return None

    def trained(self, seed: int):
        """The user's model and data (read in a quiet status line by the caller)."""
        import warnings

        from satcompress.cli.common import console
        from satcompress.pipeline.user_model import user_trained_model

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            trained = user_trained_model(self.model, self.data, seed=seed, **self.options)
        for warning in caught:
            console.print(f"[bold yellow]warning:[/] {warning.message}", highlight=False)
        return trained
