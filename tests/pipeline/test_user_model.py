"""A user's own model file: read without running code from it, or refused with the fix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import make_blobs, tiny_mlp, tiny_t2
from typer.testing import CliRunner

from satcompress.cli import app
from satcompress.pipeline.base_model import ModelFileError, save_model
from satcompress.pipeline.user_model import load_user_model, user_trained_model


@pytest.fixture
def blobs_npz(tmp_path):
    data = make_blobs(n_per_class=20)
    path = tmp_path / "blobs.npz"
    np.savez(path, x=data.train.x, y=data.train.y)
    return path


def logits(model, x):
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def test_a_state_dict_with_a_named_architecture_is_rebuilt_exactly(tmp_path, blobs):
    original = tiny_mlp()
    torch.save(original.state_dict(), tmp_path / "m.pt")
    model = load_user_model(tmp_path / "m.pt", blobs, architecture="residual_mlp")
    assert model.blocks[0].fc1.out_features == 16 and len(model.blocks) == 2
    np.testing.assert_array_equal(logits(model, blobs.test.x), logits(original, blobs.test.x))


def test_a_satcompress_model_file_names_its_own_architecture(tmp_path):
    from conftest import make_sequences

    data = make_sequences()
    from satcompress.tasks.registry import get_task

    original = get_task("transients").build_model(data, 0.25, 0.5).eval()
    save_model(original, tmp_path / "t.pt", {"task": "transients", "width_multiplier": 0.25,
                                            "depth_multiplier": 0.5})
    model = load_user_model(tmp_path / "t.pt", data)
    np.testing.assert_array_equal(logits(model, data.test.x), logits(original, data.test.x))


def test_torchscript_and_exported_programs_are_read_and_checked_against_their_graph(tmp_path):
    from conftest import make_sequences

    data, original = make_sequences(), tiny_t2()
    with warnings.catch_warnings():  # deprecated and warns on tracing, but users have such files
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(original, torch.from_numpy(data.test.x[:2]))
        torch.jit.save(traced, tmp_path / "ts.pt")
    program = torch.export.export(original, (torch.from_numpy(data.test.x[:2]),))
    torch.export.save(program, tmp_path / "ep.pt2")
    for name in ("ts.pt", "ep.pt2"):
        model = load_user_model(tmp_path / name, data, architecture="t2", n_heads=2)
        np.testing.assert_allclose(logits(model, data.test.x), logits(original, data.test.x),
                                   atol=1e-5)
    with pytest.raises(ModelFileError, match="do not reproduce the file's own outputs"):
        load_user_model(tmp_path / "ts.pt", data, architecture="t2", n_heads=4)
    with pytest.raises(ModelFileError, match="is a torchscript.*--architecture"):
        load_user_model(tmp_path / "ts.pt", data)


def test_a_pickled_module_is_refused_with_the_safe_way_to_export(tmp_path, blobs):
    torch.save(tiny_mlp(), tmp_path / "whole.pt")
    with pytest.raises(ModelFileError, match=r"pickled nn.Module.*refuses it.*state_dict\(\)"):
        load_user_model(tmp_path / "whole.pt", blobs, architecture="residual_mlp")


@pytest.mark.parametrize("architecture, message", [
    (None, "name its architecture with --architecture"),
    ("t2", "not a t2: they have no tensor 'embedding.weight'"),
    ("resnet", "Unknown architecture 'resnet'"),
])
def test_a_state_dict_needs_the_right_architecture(tmp_path, blobs, architecture, message):
    torch.save(tiny_mlp().state_dict(), tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match=message):
        load_user_model(tmp_path / "m.pt", blobs, architecture=architecture)


def test_a_model_for_other_classes_is_refused(tmp_path):
    four_classes = make_blobs(n_classes=4)
    torch.save(tiny_mlp().state_dict(), tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match="the data has 4 classes"):
        load_user_model(tmp_path / "m.pt", four_classes, architecture="residual_mlp")


def test_the_user_task_is_named_after_both_files_and_scores_its_metric(tmp_path, blobs_npz):
    torch.save(tiny_mlp().state_dict(), tmp_path / "m.pt")
    trained = user_trained_model(tmp_path / "m.pt", blobs_npz, architecture="residual_mlp",
                                 metric="macro_f1")
    assert trained.task.name.startswith("user-") and len(trained.task.name) == 21
    assert trained.task.primary_metric == "macro_f1" and trained.task.higher_is_better
    assert set(trained.metrics) == {"accuracy", "macro_f1", "weighted_log_loss"}
    with pytest.raises(ValueError, match="tss needs two classes"):
        user_trained_model(tmp_path / "m.pt", blobs_npz, architecture="residual_mlp",
                           metric="tss")


def test_cli_compresses_a_users_model_and_data(tmp_path, blobs_npz):
    from satcompress.training import TrainConfig, fit

    data = make_blobs(n_per_class=20)
    torch.manual_seed(0)
    trained = fit(tiny_mlp(), data, TrainConfig(max_epochs=15, batch_size=32, seed=0))
    torch.save(trained.state_dict(), tmp_path / "m.pt")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "compress", "--model", str(tmp_path / "m.pt"), "--data", str(blobs_npz),
        "--architecture", "residual_mlp", "--recipe", "int8",
        "--budget", "max_metric_drop=accuracy:0.1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model.sca").is_file() and (out / "report.html").is_file()


def test_cli_needs_a_task_or_a_model_with_data(tmp_path):
    result = CliRunner().invoke(app, ["compress", "--model", str(tmp_path / "m.pt")])
    assert result.exit_code == 2
    assert "both --model FILE and --data FILE" in " ".join(result.output.split())
