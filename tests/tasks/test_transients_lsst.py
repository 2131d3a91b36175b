"""The LSST variant of the transient task (``transients-lsst``): ELAsTiCC objects in six
passbands, split by object, the broker's light curves and inputs of the same alert."""

from __future__ import annotations

import math

import numpy as np
import pandas.testing as pdt
import pytest

from satcompress import broker
from satcompress.broker.classify import ALERT_HYPERPARAMETER_SEARCH
from satcompress.broker.lsst import lsst_light_curves
from satcompress.tasks import transients
from satcompress.tasks.registry import get_task

ELASTICC_FILE = "transients/elasticc_sim/classId=113/part-0-0.parquet"
N_ALERTS = 60
N_SUBSET_OBJECTS = 30


@pytest.fixture(scope="module")
def elasticc_file(real_data_dir, tmp_path_factory):
    """The first :data:`N_ALERTS` alerts of a real ELAsTiCC file (SN II), in a small Parquet
    file of a ``classId=113`` folder (as the task reads them)."""
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("elasticc") / "classId=113"
    folder.mkdir()
    pq.write_table(pq.read_table(real_data_dir / ELASTICC_FILE).slice(0, N_ALERTS),
                   folder / "part.parquet")
    return folder / "part.parquet"


def test_training_curves_and_inputs_are_the_brokers_for_the_same_alert(elasticc_file):
    task = transients.read_elasticc_light_curves([elasticc_file], all_passbands=True)
    table = broker.read_alerts([elasticc_file]).table
    longest = table.assign(n=table["cband"].map(len)).sort_values("n", ascending=False,
                                                                   kind="stable")
    longest = longest.drop_duplicates("objectId").sort_index()  # the task keeps the longest
    alerts = lsst_light_curves(longest, longest["objectId"].tolist())
    columns = ["object_id", "mjd", "band", "flux", "flux_err", "source"]
    pdt.assert_frame_equal(task[columns], alerts[columns], check_exact=True)
    assert set(task["band"]) - {"g", "r"} and set(task["source"]) == {"lsst"}
    assert set(task["label"]) == {"SN II"}
    # the model inputs too: the variant's GP settings are the broker's on alerts
    config = get_task("transients-lsst").load_options["config"]
    assert config.hyperparameter_search == ALERT_HYPERPARAMETER_SEARCH
    fitted = transients.preprocess(task, config, n_jobs=1)
    prepared = broker.preprocess_alerts(longest.reset_index(drop=True), config,
                                        broker.SelectionCuts(None, None))
    assert len(fitted.object_ids) == len(prepared.rows) > 5
    order = np.argsort(longest["objectId"].to_numpy()[prepared.rows])  # the task sorts by id
    assert np.array_equal(fitted.x, prepared.x[order])  # bit for bit


def test_the_variant_holds_whole_objects_out_with_the_two_elasticc_classes(real_data_dir):
    variant = get_task("transients-lsst")
    data = variant.load(seed=0, max_objects=N_SUBSET_OBJECTS)
    assert data.class_names == transients.LSST_CLASS_NAMES == ("SN Ia", "SN II")
    groups = [set(split.groups.tolist()) for split in (data.train, data.val, data.test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(map(len, groups)) == N_SUBSET_OBJECTS and all(g.isdigit() for g in groups[2])
    for split in (data.train, data.val, data.test):  # stratified: both classes everywhere
        assert sorted(set(split.y.tolist())) == [0, 1] and split.x.shape[1:] == (100, 4)
    assert data.preprocessing["survey"] == "lsst"
    assert data.preprocessing["config"]["hyperparameter_search"] == "grid"
    assert data.preprocessing["objects_per_class"] == {"lsst": {"SN Ia": 15, "SN II": 15}}
    again = variant.load(seed=0, max_objects=N_SUBSET_OBJECTS)  # from the cache, same split
    np.testing.assert_array_equal(again.test.groups, data.test.groups)
    other = variant.load(seed=1, max_objects=N_SUBSET_OBJECTS)
    assert set(other.test.groups.tolist()) != groups[2]
    assert transients.cache_path(survey="lsst") != transients.cache_path()
    with pytest.raises(ValueError, match="LSST variant .* is all ELAsTiCC already"):
        transients.load(survey="lsst", include_simulated=True)
    with pytest.raises(ValueError, match="Unknown survey 'rubin'"):
        transients.load_preprocessed(survey="rubin")


def test_scores_over_the_two_lsst_classes():
    labels = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    scores = transients.score(None, None, probabilities, labels)
    expected = -((math.log(0.9) + math.log(0.4)) / 2
                 + (math.log(0.8) + math.log(0.7) + math.log(0.4)) / 3) / 2
    assert scores["weighted_log_loss"] == pytest.approx(expected)
    assert scores["accuracy"] == pytest.approx(0.6)
    assert (scores["recall_sn_ia"], scores["recall_sn_ii"]) == pytest.approx((0.5, 2 / 3))
    assert "recall_slsn" not in scores
    # F1: Ia (P 1/2, R 1/2) = 1/2; II (P 2/3, R 2/3) = 2/3
    assert scores["macro_f1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # SN Ia probability 0.9, 0.4 vs 0.2, 0.3, 0.6: pairs won 3 + 2 of 6
    assert scores["ia_vs_rest_auc"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="shape"):
        transients.score(None, None, np.ones((5, 3)) / 3, labels)
