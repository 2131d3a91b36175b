"""Studies live in storage: an interrupted study resumes from SQLite, and worker processes
share one study on a real PostgreSQL server (started here from Debian's binaries)."""

from __future__ import annotations

import optuna
import pytest

from satcompress.search import FINISHED, Evaluator, SearchSettings, open_storage, run_search
from blob_task import trained_blobs
from postgres_server import PostgresServer, postgres_binaries

FAST = SearchSettings(latency_repeats=2, qat_epochs=1, proxy_examples=60,
                      student_fractions=(1.0,))  # students: test_divide_and_conquer_*, test_search_space
BUDGET = "max_bytes=3.1kB,max_metric_drop=accuracy:0.1"


def _finished(storage: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="blobs-whole", storage=storage)
    return [trial for trial in study.trials if trial.state in FINISHED]


def test_an_interrupted_study_resumes_from_sqlite_without_redoing_trials(tmp_path, monkeypatch):
    trained = trained_blobs()
    original, calls = Evaluator.evaluate, []

    def interrupted(self, assignment, full, name="search"):
        calls.append(name)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, assignment, full, name)

    monkeypatch.setattr(Evaluator, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_search(trained, BUDGET, 4, tmp_path, settings=FAST, latency_repeats=2)
    monkeypatch.undo()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    before = [(trial.number, trial.params, trial.values) for trial in _finished(storage)]
    assert 0 < len(before) < 4

    result = run_search(trained, BUDGET, 4, tmp_path, settings=FAST, latency_repeats=2)
    after = _finished(storage)
    assert len(after) == 4
    assert [(trial.number, trial.params, trial.values) for trial in after][: len(before)] == before
    study = optuna.load_study(study_name="blobs-whole", storage=storage)
    assert [trial.state.name for trial in study.trials].count("FAIL") == 1  # the interrupted one
    assert result.chosen.candidate


def test_a_study_of_another_search_is_not_resumed(tmp_path):
    trained = trained_blobs()
    run_search(trained, BUDGET, 1, tmp_path, settings=FAST, latency_repeats=2)
    with pytest.raises(ValueError, match="belongs to another search .*budget.*new --study-name"):
        run_search(trained, "max_bytes=3kB", 2, tmp_path, settings=FAST, latency_repeats=2)


def test_unsupported_storage_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="sqlite:///path/to/study.db .* postgresql://"):
        run_search("flares", BUDGET, 2, tmp_path, storage="mysql://localhost/db")


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server for this module (Debian's postgresql binaries)."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl, postgres) not found; install "
                    "Debian's postgresql package to run the multi-worker storage test")
    server = PostgresServer(binaries).start()
    yield server.url
    server.stop()


def test_two_worker_processes_share_one_postgresql_study_with_an_exact_trial_count(
        postgres_url, tmp_path):
    trained = trained_blobs()
    result = run_search(trained, BUDGET, 4, tmp_path, workers=2, storage=postgres_url,
                        settings=FAST, latency_repeats=2)
    study = optuna.load_study(study_name="blobs-whole", storage=open_storage(postgres_url))
    assert len(study.trials) == 4
    assert all(trial.state in FINISHED for trial in study.trials)
    assert {trial.user_attrs["worker"] for trial in study.trials} == {0, 1}
    assert result.storage == postgres_url and not (tmp_path / "study.db").exists()
    again = run_search(trained, BUDGET, 4, tmp_path, workers=2, storage=postgres_url,
                       settings=FAST, latency_repeats=2)  # already complete: nothing runs
    assert len(optuna.load_study(study_name="blobs-whole", storage=open_storage(postgres_url)).trials) == 4
    assert again.chosen.label == result.chosen.label
