"""A user's own data file becomes train/validation/test splits like a reference task's."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_blobs

from satcompress.tasks import user
from satcompress.tasks.user import UserDataError, read_user_data, score


def blob_table(n_per_class: int = 30) -> pd.DataFrame:
    data = make_blobs(n_per_class=n_per_class)
    frame = pd.DataFrame(data.train.x, columns=[f"f{i}" for i in range(6)])
    return frame.assign(label=np.array(["a", "b", "c"])[data.train.y],
                        region=np.arange(len(frame)) // 3)


def test_a_csv_table_is_split_60_20_20_by_group_and_kept_as_the_file_holds_it(tmp_path):
    path = tmp_path / "mine.csv"
    table = blob_table()
    table.to_csv(path, index=False)
    data = read_user_data(path, group_column="region")
    assert data.class_names == ("a", "b", "c") and data.input_shape == (6,)
    assert (len(data.train), len(data.val), len(data.test)) == (54, 18, 18)
    assert not set(data.train.groups) & (set(data.val.groups) | set(data.test.groups))
    every_row = np.concatenate([data.train.x, data.val.x, data.test.x])
    np.testing.assert_allclose(np.sort(every_row[:, 0]), np.sort(table.f0), rtol=1e-6)
    assert data.preprocessing["features"] == [f"f{i}" for i in range(6)]
    assert data.preprocessing["split"] == "automatic" and data.train.x.dtype == np.float32


def test_the_users_split_column_is_kept_and_groups_across_it_are_warned_of(tmp_path):
    table = blob_table().assign(part=lambda f: np.array(["train", "train", "train", "val",
                                                         "test"])[np.arange(len(f)) % 5])
    data = user.user_data(table, split_column="part")
    assert (len(data.train), len(data.val), len(data.test)) == (54, 18, 18)
    assert "part" not in data.preprocessing["features"] and data.preprocessing["split"] == "given"
    with pytest.warns(UserWarning, match="group"):
        user.user_data(table, split_column="part", group_column="region")
    with pytest.raises(UserDataError, match=r"holds \['tset'\]"):
        user.user_data(table.assign(part="tset"), split_column="part")


def test_separate_train_val_test_tables_and_arrays_are_the_users_split(tmp_path):
    table = blob_table()
    fold = table.region.to_numpy() % 5
    parts = table[fold < 3], table[fold == 3], table[fold == 4]
    for number, part in enumerate(parts):
        part.to_csv(tmp_path / f"{number}.csv", index=False)
    data = read_user_data(tmp_path / "0.csv", val_path=tmp_path / "1.csv",
                          test_path=tmp_path / "2.csv", group_column="region")
    np.testing.assert_allclose(data.test.x, parts[2].iloc[:, :6].to_numpy(np.float32))
    x, y = table.iloc[:, :6].to_numpy(), np.unique(table.label, return_inverse=True)[1]
    arrays = user.user_data(*((x[fold_rows], y[fold_rows]) for fold_rows in
                              (fold < 3, fold == 3, fold == 4)), class_names=("a", "b", "c"))
    np.testing.assert_array_equal(arrays.test.y, data.test.y)


def test_without_a_group_column_the_automatic_split_warns_of_leaks(tmp_path):
    blob_table().to_csv(tmp_path / "t.csv", index=False)
    with pytest.warns(UserWarning, match="no group column"):
        read_user_data(tmp_path / "t.csv")


def test_parquet_and_csv_give_the_same_splits(tmp_path):
    blob_table().to_csv(tmp_path / "t.csv", index=False)
    blob_table().to_parquet(tmp_path / "t.parquet")
    a = read_user_data(tmp_path / "t.csv", group_column="region")
    b = read_user_data(tmp_path / "t.parquet", group_column="region")
    np.testing.assert_allclose(a.test.x, b.test.x, rtol=1e-6)
    np.testing.assert_array_equal(a.test.y, b.test.y)


def test_arrays_are_used_as_given(tmp_path):
    data = make_blobs(n_per_class=20)
    np.savez(tmp_path / "d.npz", x=data.train.x, y=data.train.y,
             class_names=np.array(["x", "y", "z"]), groups=np.arange(len(data.train.y)))
    loaded = read_user_data(tmp_path / "d.npz")
    assert loaded.class_names == ("x", "y", "z") and loaded.preprocessing["format"] == "arrays"
    assert sorted(np.concatenate([loaded.train.x, loaded.val.x, loaded.test.x]).sum(axis=1)) \
        == pytest.approx(sorted(data.train.x.sum(axis=1)), rel=1e-5)


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns="label"), r"no column\(s\) \['label'\]"),
    (lambda f: f.assign(f0="text"), r"must be numeric \(real\); \['f0'\] are not"),
    (lambda f: f.assign(f1=np.where(np.arange(len(f)) == 3, np.nan, f.f1)),
     r"column 'f1', row 3 is nan"),
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


def csv_with_header(path, header: str, frame: pd.DataFrame) -> None:
    """``frame``'s values under a header line written by hand (pandas cannot repeat names)."""
    path.write_text(header + "\n" + frame.to_csv(index=False, header=False))


@pytest.mark.parametrize("copied", ["label", "region", "f0"])
def test_a_column_repeated_in_a_csv_header_is_refused_not_renamed(tmp_path, copied):
    frame = blob_table()
    frame = frame.assign(copy=frame[copied])
    path = tmp_path / "dup.csv"
    csv_with_header(path, ",".join([*frame.columns[:-1], copied]), frame)
    with pytest.raises(UserDataError, match=rf"\['{copied}'\] appear more than once"):
        read_user_data(path, group_column="region")


def test_a_column_repeated_in_a_parquet_schema_is_refused(tmp_path):
    frame = blob_table()
    columns = [pa.array(frame[c]) for c in frame.columns] + [pa.array(frame.label)]
    pq.write_table(pa.table(columns, names=[*frame.columns, "label"]), tmp_path / "dup.parquet")
    with pytest.raises(UserDataError, match=r"\['label'\] appear more than once"):
        read_user_data(tmp_path / "dup.parquet")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("copy", ["label.1", "region.2"])
def test_a_renamed_copy_of_the_label_or_group_column_is_refused(tmp_path, suffix, copy):
    frame = blob_table()
    frame[copy] = pd.factorize(frame[copy.split(".")[0]])[0]
    path = tmp_path / f"renamed{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    with pytest.raises(UserDataError, match=rf"\['{copy}'\] look like renamed copies"):
        read_user_data(path, group_column="region")


def test_the_label_cannot_also_be_the_group(tmp_path):
    blob_table().to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UserDataError, match="both the label and the group column"):
        read_user_data(tmp_path / "t.csv", group_column="label")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_empty_table_is_refused(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    empty = blob_table().iloc[:0]
    empty.to_csv(path, index=False) if suffix == ".csv" else empty.to_parquet(path)
    with pytest.raises(UserDataError, match="holds no rows"):
        read_user_data(path)
    path.write_bytes(b"")
    with pytest.raises(UserDataError, match="Cannot read .* as a table"):
        read_user_data(path)


def test_a_missing_group_is_named_by_row(tmp_path):
    frame = blob_table()
    frame["region"] = frame.region.astype(float).where(np.arange(len(frame)) != 4)
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UserDataError, match="group column 'region' is missing in row 4"):
        read_user_data(tmp_path / "t.csv", group_column="region")


def test_a_value_beyond_float64_in_a_csv_is_named_by_column_and_row(tmp_path):
    frame = blob_table().astype({"f2": str})
    frame.loc[7, "f2"] = "1e400"
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UserDataError, match="column 'f2', row 7 is inf"):
        read_user_data(tmp_path / "t.csv")


def test_a_value_beyond_float32_is_named_by_column_and_row(tmp_path):
    frame = blob_table().assign(f2=lambda f: f.f2.astype(float))
    frame.loc[7, "f2"] = 1e39
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(UserDataError, match=r"column 'f2', row 7 is 1e\+39: beyond the range "
                       "of float32"):
        read_user_data(tmp_path / "t.parquet", group_column="region")


def test_a_light_curve_table_with_a_second_label_column_is_refused(tmp_path):
    frame = pd.DataFrame({"object_id": ["a"], "mjd": [1.0], "band": ["g"], "flux": [1.0],
                          "flux_err": [0.1], "label": ["x"], "cls": ["y"]})
    frame.to_csv(tmp_path / "lc.csv", index=False)
    with pytest.raises(UserDataError, match="a column 'label' besides the label column 'cls'"):
        read_user_data(tmp_path / "lc.csv", label_column="cls")


def light_curve_table(n_objects: int = 30, seed: int = 0) -> pd.DataFrame:
    """Rising-and-fading transients in g and r, two classes (fast and slow), 12 points each."""
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(n_objects):
        slow = number % 2
        width = 30.0 if slow else 8.0
        for band, offset in (("g", 0.0), ("r", 2.0)):
            mjd = np.sort(rng.uniform(-20, 60, 12)) + 59000
            flux = 100 * np.exp(-0.5 * ((mjd - 59000 - offset) / width) ** 2)
            rows += [(f"obj{number}", t, band, f + rng.normal(0, 3), 3.0,
                      "slow" if slow else "fast") for t, f in zip(mjd, flux)]
    return pd.DataFrame(rows, columns=["object_id", "mjd", "band", "flux", "flux_err", "label"])


@pytest.mark.parametrize("survey", ["ztf", "lsst"])
def test_a_light_curve_table_goes_through_the_gp_preprocessing_by_object(tmp_path, survey):
    table = light_curve_table()
    table["split"] = np.array(["train", "train", "train", "val", "test"])[
        table.object_id.str[3:].astype(int) // 2 % 5]
    table.to_parquet(tmp_path / "curves.parquet")
    data = read_user_data(tmp_path / "curves.parquet", split_column="split", survey=survey)
    assert data.class_names == ("fast", "slow") and data.input_shape[0] == 100
    assert data.preprocessing["format"] == "light_curves"
    assert data.preprocessing["survey"] == survey and data.preprocessing["split"] == "given"
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 6)
    with pytest.raises(UserDataError, match="Unknown survey 'hst'"):
        read_user_data(tmp_path / "curves.parquet", split_column="split", survey="hst")


def npz_arrays(n: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(n, 3)), "y": np.arange(n) % 2}


def npy_member(array: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """``array`` as .npy bytes, its header optionally declaring another ``shape``."""
    stream = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(array)
    np.lib.format.write_array_header_1_0(stream, {**header, "shape": shape or array.shape})
    return stream.getvalue() + array.tobytes()


def test_an_npz_header_declaring_more_than_it_holds_is_refused_before_loading(tmp_path):
    arrays = npz_arrays()
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy_member(arrays["x"], shape=(10**12, 3)))
        archive.writestr("y.npy", npy_member(arrays["y"]))
    with pytest.raises(UserDataError, match=r"'x' declares shape \(1000000000000, 3\)"):
        read_user_data(path)


def test_npz_and_parquet_over_the_size_limit_are_refused_before_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(user, "MAX_DATA_BYTES", 100)
    np.savez(tmp_path / "d.npz", **npz_arrays())
    with pytest.raises(UserDataError, match="bytes of arrays, over 100"):
        read_user_data(tmp_path / "d.npz")
    blob_table().to_parquet(tmp_path / "t.parquet")
    with pytest.raises(UserDataError, match="values, over 100 bytes"):
        read_user_data(tmp_path / "t.parquet")


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "y": a["y"].astype(float)}, "'y' must be one integer label per row"),
    (lambda a: {**a, "y": a["y"][:, None]}, "'y' must be one integer label per row"),
    (lambda a: {**a, "y": a["y"] - 1}, "y holds labels from -1 to 0"),
    (lambda a: {**a, "y": np.where(a["y"] == 1, 10**12, 0)}, "labels from 0 to 1000000000000"),
    (lambda a: {**a, "x": a["x"][:, 0]}, "'x' must be real numbers, examples first"),
    (lambda a: {"x": a["x"][:0], "y": a["y"][:0]}, "holds no examples"),
    (lambda a: {**a, "groups": np.arange(29)}, "'groups' must give one group per row"),
    (lambda a: {**a, "class_names": np.array(["a", "a"])}, "the class names repeat a name"),
    (lambda a: {**a, "x": np.where(np.arange(90).reshape(30, 3) == 10, np.nan, a["x"])},
     r"x\[3, 1\] is nan"),
    (lambda a: {**a, "x": np.where(np.arange(90).reshape(30, 3) == 23, 1e39, a["x"])},
     r"x\[7, 2\] is 1e\+39: beyond the range of float32"),
])
@pytest.mark.filterwarnings("ignore:.*no group column:UserWarning")
def test_bad_npz_arrays_fail_naming_the_problem(tmp_path, change, message):
    np.savez(tmp_path / "d.npz", **change(npz_arrays()))
    with pytest.raises(UserDataError, match=message):
        read_user_data(tmp_path / "d.npz")


def test_npz_that_is_not_an_archive_or_holds_objects_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.save(tmp_path / "d.npy", npz_arrays()["x"])
    path.write_bytes((tmp_path / "d.npy").read_bytes())
    with pytest.raises(UserDataError, match="Cannot read .* as .npz arrays"):
        read_user_data(path)
    np.savez(path, x=np.array([[{"a": 1}]] * 30, dtype=object), y=npz_arrays()["y"])
    with pytest.raises(UserDataError, match="'x' holds Python objects"):
        read_user_data(path)


def test_scores_include_tss_for_two_classes_and_refuse_it_otherwise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y + rng.normal(0, 0.4, 200), 0.01, 0.99)
    probabilities = np.stack([1 - p, p], axis=1)
    scores = score(probabilities, y, probabilities, y, metric="tss")
    assert {"accuracy", "macro_f1", "weighted_log_loss", "tss"} == set(scores)
    assert 0.5 < scores["tss"] <= 1
    three = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="tss needs two classes"):
        score(three, np.arange(4) % 3, three, np.arange(4) % 3, metric="tss")


def test_a_csv_row_longer_than_its_header_is_refused_not_shifted(tmp_path):
    rows = "".join(f"{i},{i % 2},a\n" for i in range(40))
    (tmp_path / "shifted.csv").write_text("f0,label\n" + rows)
    with pytest.raises(UserDataError, match="more fields than the header"):
        read_user_data(tmp_path / "shifted.csv")
