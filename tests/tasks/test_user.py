"""A user's own data file becomes train/validation/test splits like a reference task's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_blobs

from satcompress.tasks.user import UserDataError, read_user_data, score


def blob_table(n_per_class: int = 30) -> pd.DataFrame:
    data = make_blobs(n_per_class=n_per_class)
    frame = pd.DataFrame(data.train.x, columns=[f"f{i}" for i in range(6)])
    return frame.assign(label=np.array(["a", "b", "c"])[data.train.y],
                        region=np.arange(len(frame)) // 3)


def test_a_csv_table_is_split_60_20_20_by_group_and_standardised_on_train(tmp_path):
    path = tmp_path / "mine.csv"
    blob_table().to_csv(path, index=False)
    data = read_user_data(path, group_column="region")
    assert data.class_names == ("a", "b", "c") and data.input_shape == (6,)
    assert (len(data.train), len(data.val), len(data.test)) == (54, 18, 18)
    assert not set(data.train.groups) & (set(data.val.groups) | set(data.test.groups))
    np.testing.assert_allclose(data.train.x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(data.train.x.std(axis=0), 1, atol=1e-4)
    assert data.preprocessing["features"] == [f"f{i}" for i in range(6)]
    assert len(data.preprocessing["mean"]) == 6 and data.train.x.dtype == np.float32


def test_parquet_and_csv_give_the_same_splits(tmp_path):
    blob_table().to_csv(tmp_path / "t.csv", index=False)
    blob_table().to_parquet(tmp_path / "t.parquet")
    a, b = read_user_data(tmp_path / "t.csv"), read_user_data(tmp_path / "t.parquet")
    np.testing.assert_allclose(a.test.x, b.test.x, rtol=1e-6)
    np.testing.assert_array_equal(a.test.y, b.test.y)


def test_arrays_are_used_as_given(tmp_path):
    data = make_blobs(n_per_class=20)
    np.savez(tmp_path / "d.npz", x=data.train.x, y=data.train.y,
             class_names=np.array(["x", "y", "z"]))
    loaded = read_user_data(tmp_path / "d.npz")
    assert loaded.class_names == ("x", "y", "z") and loaded.preprocessing["format"] == "arrays"
    assert sorted(np.concatenate([loaded.train.x, loaded.val.x, loaded.test.x]).sum(axis=1)) \
        == pytest.approx(sorted(data.train.x.sum(axis=1)), rel=1e-5)


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns="label"), r"no column\(s\) \['label'\]"),
    (lambda f: f.assign(f0="text"), r"must be numeric; \['f0'\] are not"),
    (lambda f: f.assign(f1=np.where(np.arange(len(f)) == 3, np.nan, f.f1)), r"\['f1'\] hold missing"),
    (lambda f: f.assign(label="a"), "a single class"),
    (lambda f: f.assign(label=np.where(np.arange(len(f)) < 3, "rare", f.label)), r"rare \(3\)"),
])
def test_bad_tables_fail_naming_the_problem(tmp_path, mutate, message):
    path = tmp_path / "bad.csv"
    mutate(blob_table()).to_csv(path, index=False)
    with pytest.raises(UserDataError, match=message):
        read_user_data(path)


def test_a_missing_file_and_bad_arrays_are_named(tmp_path):
    with pytest.raises(UserDataError, match="does not exist"):
        read_user_data(tmp_path / "nothing.csv")
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2)))
    with pytest.raises(UserDataError, match="must hold arrays 'x' and 'y'"):
        read_user_data(tmp_path / "d.npz")


def test_scores_include_tss_for_two_classes_and_refuse_it_otherwise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y + rng.normal(0, 0.4, 200), 0.01, 0.99)
    probabilities = np.stack([1 - p, p], axis=1)
    scores = score("tss", probabilities, y, probabilities, y)
    assert {"accuracy", "macro_f1", "weighted_log_loss", "tss"} == set(scores)
    assert 0.5 < scores["tss"] <= 1
    three = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="tss needs two classes"):
        score("tss", three, np.arange(4) % 3, three, np.arange(4) % 3)
