"""Classification in process: the cuts, the task's own preprocessing, the artifact."""

from __future__ import annotations

import numpy as np
import pytest

from satcompress import broker
from satcompress.broker import SelectionCuts, classify_alerts, load_classifier, reason_counts
from satcompress.broker.classify import preprocess_alerts
from satcompress.tasks import transients

NO_AGE_CUT = SelectionCuts(max_age_days=None)


def test_bundled_alerts_are_classified_or_given_a_reason(bundled, tiny_artifact):
    results = classify_alerts(bundled, tiny_artifact)
    assert len(results) == 175 and results["candid"].tolist() == bundled.table["candid"].tolist()
    assert reason_counts(results) == {"older_than_90_days": 152,
                                      "fewer_than_2_points_in_g_and_r": 19,
                                      "classified": 3, "solar_system_object": 1}
    probabilities = results[[broker.probability_column(c) for c in transients.CLASS_NAMES]]
    classified = results["reason"].isna()
    assert np.allclose(probabilities[classified].sum(axis=1), 1.0)
    assert probabilities[~classified].isna().all().all()
    assert results.loc[classified, "predicted_class"].isin(transients.CLASS_NAMES).all()


def test_the_artifact_sees_exactly_the_tasks_preprocessing(bundled):
    table = bundled.table.iloc[:60].reset_index(drop=True)
    config = transients.PreprocessingConfig()
    prepared = preprocess_alerts(table, config, SelectionCuts(None, None))
    keys = [f"{row:04d}" for row in range(len(table))]
    task = transients.preprocess(broker.light_curves(table, keys), config, n_jobs=1)
    assert len(prepared.rows) == len(task.object_ids) == 4
    assert np.array_equal(prepared.x, task.x)  # bit for bit: the same GP code and settings
    skipped = {f"ztf/{reason}" for reason in prepared.reasons if reason is not None}
    assert skipped <= set(task.skipped_counts) | {"ztf/fewer_than_2_points_in_g_and_r"}


def test_an_alert_gets_the_same_probabilities_alone_and_in_any_batch(bundled, tiny_artifact):
    batch = classify_alerts(bundled, tiny_artifact, NO_AGE_CUT)
    classified = np.flatnonzero(batch["reason"].isna())
    columns = [broker.probability_column(c) for c in transients.CLASS_NAMES]
    for row in classified[:3]:
        alone = classify_alerts(bundled.table.iloc[[row]], tiny_artifact, NO_AGE_CUT)
        assert np.array_equal(alone[columns].to_numpy(), batch.loc[[row], columns].to_numpy())


def test_an_alert_whose_logits_are_not_finite_is_a_fault_never_a_class(bundled, tiny_artifact,
                                                                        faulty_artifact):
    clean = classify_alerts(bundled, tiny_artifact, NO_AGE_CUT)
    results = classify_alerts(bundled, faulty_artifact, NO_AGE_CUT)
    columns = [broker.probability_column(c) for c in transients.CLASS_NAMES]
    faulted = (results["reason"] == broker.FAULT_REASON).to_numpy()
    classified = results["reason"].isna().to_numpy()
    assert 0 < faulted.sum() < (faulted | classified).sum() == 78
    assert (results.loc[faulted, "predicted_class"] == broker.FAULT).all()
    assert results.loc[faulted, columns].isna().all().all()
    assert results.loc[classified, "predicted_class"].isin(transients.CLASS_NAMES).all()
    assert reason_counts(results)[broker.FAULT_REASON] == faulted.sum()
    # the oracle: the faulted alerts are exactly those whose logits from the runtime are not
    # all finite; the cuts and the other alerts' reasons are those of the sound model
    model = load_classifier(faulty_artifact).runtime
    prepared = preprocess_alerts(bundled.table, load_classifier(faulty_artifact).config,
                                 NO_AGE_CUT)
    with np.errstate(all="ignore"):
        finite = np.isfinite(model.run(prepared.x)).all(axis=1)
    assert np.array_equal(faulted[prepared.rows], ~finite)
    sound = ~faulted & ~classified
    assert results.loc[sound, "reason"].equals(clean.loc[sound, "reason"])


def test_an_artifact_of_the_lsst_variant_is_accepted(tiny_artifact):
    metadata = dict(load_classifier(tiny_artifact).runtime.metadata, task="transients-lsst")
    assert broker.preprocessing_config(metadata) == transients.PreprocessingConfig()


def test_the_artifact_is_loaded_once_per_process_by_content(tiny_artifact):
    assert load_classifier(tiny_artifact) is load_classifier(tiny_artifact.read_bytes())


def test_alerts_get_the_models_gp_settings_with_the_fast_hyperparameter_search(tiny_artifact):
    import dataclasses

    expected = dataclasses.replace(transients.PreprocessingConfig(), hyperparameter_search="grid")
    assert transients.PreprocessingConfig().hyperparameter_search == "lbfgs"  # training data
    assert load_classifier(tiny_artifact).config == expected


@pytest.mark.parametrize("metadata, message", [
    ({"task": "flares"}, "built for task 'flares'.*--task transients"),
    ({"task": "transients", "preprocessing_version": 1}, "version 1 but this satcompress"),
    ({"task": "transients", "preprocessing_version": transients.PREPROCESSING_VERSION},
     "lacks preprocessing.config"),
])  # fmt: skip
def test_an_artifact_of_another_task_or_preprocessing_is_refused(metadata, message):
    with pytest.raises(ValueError, match=message):
        broker.preprocessing_config(metadata)


def test_unreadable_alerts_become_rows_with_a_reason():
    problems = [broker.AlertProblem("a.avro", 3, "ZTF0", 12, "candidate.jd is missing"),
                broker.AlertProblem("b.avro", None, None, None, "cannot read the file")]
    rows = broker.problem_rows(problems, transients.CLASS_NAMES)
    assert len(rows) == 1 and rows.loc[0, "reason"] == broker.UNPARSEABLE
    assert rows.loc[0, "objectId"] == "ZTF0" and rows.loc[0, "candid"] == 12
