"""Progress reports of long steps and the worker count (``--jobs``)."""

from __future__ import annotations

import io

import pytest

from satcompress import progress


def test_progress_writes_periodic_lines_off_a_terminal_and_one_line_on_it():
    stream = io.StringIO()
    with progress.Progress("GP", 4, stream=stream, interval_s=0.0) as bar:
        bar.advance(2)
        bar.advance(2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "GP: 2/4 (50%)" in lines[0] and "GP: 4/4 (100%)" in lines[-1]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    with progress.Progress("GP", 2, stream=terminal, refresh_s=0.0) as bar:
        bar.advance(2)
    assert terminal.getvalue().startswith("\rGP: 2/2") and terminal.getvalue().count("\n") == 1
    silent = io.StringIO()
    with progress.Progress("GP", 2, stream=silent, enabled=False) as bar:
        bar.advance(2)
    assert silent.getvalue() == ""


def test_default_jobs_follows_set_jobs_then_the_environment(monkeypatch):
    monkeypatch.setenv(progress.JOBS_VARIABLE, "3")
    assert progress.default_jobs() == 3
    progress.set_default_jobs(1)
    try:
        assert progress.default_jobs() == 1
    finally:
        progress.set_default_jobs(None)
    monkeypatch.setenv(progress.JOBS_VARIABLE, "0")
    with pytest.raises(ValueError, match="must be >= 1"):
        progress.default_jobs()


def test_training_reports_its_epochs_when_progress_is_on_by_default(capsys):
    torch = pytest.importorskip("torch")
    import numpy as np

    from satcompress.tasks.base import Split, TaskData
    from satcompress.training import TrainConfig, fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    split = Split(x=x, y=y, groups=np.arange(64))
    data = TaskData(split, split, split, ("a", "b"), {})
    progress.set_default_progress(True)
    try:
        fit(torch.nn.Linear(3, 2), data, TrainConfig(max_epochs=2, batch_size=32))
    finally:
        progress.set_default_progress(False)
    assert "training (epochs): 2/2 (100%) val loss" in capsys.readouterr().err
    fit(torch.nn.Linear(3, 2), data, TrainConfig(max_epochs=2, batch_size=32))
    assert capsys.readouterr().err == ""


def test_the_jobs_option_of_the_command_line_sets_the_worker_count():
    from typer.testing import CliRunner

    from satcompress.cli.app import app

    try:
        result = CliRunner().invoke(app, ["--jobs", "3", "train", "--help"])
        assert result.exit_code == 0 and progress.default_jobs() == 3
        assert progress.default_progress()  # the command line reports long steps
        assert CliRunner().invoke(app, ["--jobs", "0", "train", "--help"]).exit_code == 2
    finally:
        progress.set_default_jobs(None)
        progress.set_default_progress(False)
