"""Distilled students are shared between the processes of a search through a folder."""

from __future__ import annotations

import torch
from conftest import make_blobs, tiny_mlp

from satcompress import stages
from satcompress.search.students import StudentStore


def distillation():
    return stages.config_type("hinton_kd")(target_parameter_fraction=0.25, epochs=1)


def test_a_student_stored_by_one_process_is_reused_by_another(tmp_path):
    teacher, data = tiny_mlp(), make_blobs(n_per_class=10)
    config = distillation()
    first = StudentStore(teacher, tmp_path / "students")
    assert config not in first
    first[config] = stages.apply(teacher, config, data)
    second = StudentStore(teacher, tmp_path / "students")  # another worker, or a re-run
    assert config in second
    x = torch.from_numpy(data.test.x)
    with torch.no_grad():
        assert torch.equal(second[config].eval()(x), first[config].eval()(x))


def test_another_teacher_or_a_damaged_file_means_distilling_again(tmp_path):
    teacher, data = tiny_mlp(), make_blobs(n_per_class=10)
    config = distillation()
    store = StudentStore(teacher, tmp_path)
    store[config] = stages.apply(teacher, config, data)
    assert config not in StudentStore(tiny_mlp(seed=1), tmp_path)
    store.path(config).write_bytes(b"not a checkpoint")
    assert config not in StudentStore(teacher, tmp_path)
