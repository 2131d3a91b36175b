"""The data layer: every file pinned with a checksum, verified local copies, clear errors."""

from __future__ import annotations

import shutil

import pytest

from satcompress.data import DATA_DIR_VARIABLE, DataFile, DataFileError, fetch, fetch_all, registry

FLARES = "flares/sharp_geM_24h/dataset.csv"


def test_every_file_is_pinned_to_a_commit_with_a_sha256_and_licence():
    files = registry()
    assert FLARES in files and len(files) >= 60
    for entry in files.values():
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        assert len(entry.commit) == 40
        assert entry.url.startswith(f"https://raw.githubusercontent.com/{entry.repository}/{entry.commit}/")
        assert entry.licence


def test_paths_with_spaces_are_url_encoded():
    url = registry()[FLARES].url
    assert " " not in url and "%20" in url


def test_fetch_returns_the_verified_local_copy(real_data_dir):
    assert fetch(FLARES) == real_data_dir / FLARES


def test_fetch_all_returns_every_file_under_a_prefix(real_data_dir):
    paths = fetch_all("transients/ztf_tns_labelled/")
    assert len(paths) == 8 and all(path.is_file() for path in paths)


def test_a_corrupted_local_copy_is_refused_naming_the_file(tmp_path, monkeypatch, real_data_dir):
    copy = tmp_path / FLARES
    copy.parent.mkdir(parents=True)
    shutil.copy(real_data_dir / FLARES, copy)
    with copy.open("ab") as stream:
        stream.write(b"\n")
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(tmp_path))
    with pytest.raises(DataFileError, match="does not match its registered sha256") as error:
        fetch(FLARES)
    assert str(copy) in str(error.value)


def test_unknown_file_names_are_refused():
    with pytest.raises(DataFileError, match="Unknown data file"):
        fetch("flares/no_such_file.csv")
    with pytest.raises(DataFileError, match="No registered data file"):
        fetch_all("nowhere/")


def test_offline_without_a_local_copy_names_the_file_and_the_variable(tmp_path, monkeypatch):
    # Nothing listens on port 9 of the loopback: the download fails at once, like offline.
    monkeypatch.setattr(DataFile, "url", property(lambda self: f"http://127.0.0.1:9/{self.name}"))
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(tmp_path / "empty"))
    with pytest.raises(DataFileError) as error:
        fetch(FLARES)
    message = str(error.value)
    assert FLARES in message and DATA_DIR_VARIABLE in message and "could not be downloaded" in message
