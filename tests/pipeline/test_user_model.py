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
    np.savez(path, x=data.train.x, y=data.train.y, groups=np.arange(len(data.train.y)))
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


@pytest.fixture
def compiled_files(tmp_path):
    """A TorchScript archive and an exported program of a tiny t2, with its data."""
    from conftest import make_sequences

    data, original = make_sequences(), tiny_t2()
    with warnings.catch_warnings():  # deprecated and warns on tracing, but users have such files
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(original, torch.from_numpy(data.test.x[:2]))
        torch.jit.save(traced, tmp_path / "ts.pt")
    program = torch.export.export(original, (torch.from_numpy(data.test.x[:2]),))
    torch.export.save(program, tmp_path / "ep.pt2")
    return data, original, tmp_path / "ts.pt", tmp_path / "ep.pt2"


def test_compiled_files_are_refused_by_default_without_loading_them(compiled_files, monkeypatch):
    data, _, torchscript, exported = compiled_files

    def code_ran(*args, **kwargs):
        raise AssertionError("the file was loaded, so its code could run")

    monkeypatch.setattr(torch.jit, "load", code_ran)
    monkeypatch.setattr(torch.export, "load", code_ran)
    for path, kind in ((torchscript, "torchscript"), (exported, "exported program")):
        with pytest.raises(ModelFileError, match=f"is a {kind}: loading it runs code.*"
                           "state_dict.*--run-code-in-model-file"):
            load_user_model(path, data, architecture="t2", n_heads=2)


def test_a_scripted_side_effect_does_not_happen_by_default(tmp_path, blobs):
    class Writes(torch.nn.Module):
        def __init__(self, path: str):
            super().__init__()
            self.path = path
            self.linear = torch.nn.Linear(6, 3)

        def forward(self, x):
            torch.save(x, self.path)  # what a hostile forward could do
            return self.linear(x)

    marker = tmp_path / "written"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Writes(str(marker))), tmp_path / "hostile.pt")
    with pytest.raises(ModelFileError, match="loading it runs code"):
        load_user_model(tmp_path / "hostile.pt", blobs, architecture="residual_mlp")
    result = CliRunner().invoke(app, ["compress", "--model", str(tmp_path / "hostile.pt"),
                                      "--data", str(tmp_path / "hostile.pt"), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not marker.exists()


def test_compiled_files_when_allowed_are_checked_against_their_graph(compiled_files):
    data, original, torchscript, exported = compiled_files
    for path in (torchscript, exported):
        model = load_user_model(path, data, architecture="t2", n_heads=2,
                                run_code_in_model_file=True)
        np.testing.assert_allclose(logits(model, data.test.x), logits(original, data.test.x),
                                   atol=1e-5)
    with pytest.raises(ModelFileError, match="do not reproduce the file's own outputs"):
        load_user_model(torchscript, data, architecture="t2", n_heads=4,
                        run_code_in_model_file=True)
    with pytest.raises(ModelFileError, match="is a torchscript.*--architecture"):
        load_user_model(torchscript, data, run_code_in_model_file=True)


def test_a_pickled_module_is_refused_with_the_safe_way_to_export(tmp_path, blobs):
    torch.save(tiny_mlp(), tmp_path / "whole.pt")
    with pytest.raises(ModelFileError, match=r"pickled .*nn.Module.*refuses it.*state_dict\(\)"):
        load_user_model(tmp_path / "whole.pt", blobs, architecture="residual_mlp")


def _truncated(path):
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(b""), "is empty"),
    (_truncated, "truncated or damaged"),
    (lambda path: path.write_bytes(b"x,y\n1,2\n"), "is not a PyTorch file"),
    (lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)), "not a PyTorch file"),
])
def test_each_unreadable_model_file_gets_the_message_that_fits_it(tmp_path, blobs, damage,
                                                                   message):
    path = tmp_path / "m.pt"
    torch.save(tiny_mlp().state_dict(), path)
    damage(path)
    with pytest.raises(ModelFileError, match=message):
        load_user_model(path, blobs, architecture="residual_mlp")


@pytest.mark.parametrize("change, message", [
    (lambda w: w.fill_(float("nan")), r"holds nan at index \[0, 0\]"),
    (lambda w: w.mul_(1e30), "at most 1e\\+10 in magnitude"),
    (lambda w: w.to(torch.int32), "is int32, the layer holds float32"),
    (lambda w: w.to(torch.complex64), "is complex64; weights must be real floating point"),
    (lambda w: w > 0, "is bool; weights must be real"),
])
def test_weights_must_be_finite_real_floating_point(tmp_path, blobs, change, message):
    weights = tiny_mlp().state_dict()
    changed = change(weights["stem.weight"])
    weights["stem.weight"] = weights["stem.weight"] if changed is None else changed
    torch.save(weights, tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match=message):
        load_user_model(tmp_path / "m.pt", blobs, architecture="residual_mlp")


@pytest.mark.parametrize("metadata, message", [
    ({"task": "flares", "depth_multiplier": 1.0}, "'width_multiplier' is None"),
    ({"task": "flares", "width_multiplier": 1e4, "depth_multiplier": 1.0},
     "cannot be rebuilt: the tensor .* of another shape"),
    ({"task": "flares", "width_multiplier": float("nan"), "depth_multiplier": 1.0},
     "positive finite number"),
    ({"task": "no-such-task", "width_multiplier": 1.0, "depth_multiplier": 1.0},
     "Unknown task 'no-such-task'"),
])
def test_a_model_file_with_bad_metadata_is_refused_before_allocating(tmp_path, blobs, metadata,
                                                                     message):
    import tracemalloc

    save_model(tiny_mlp(), tmp_path / "m.pt", metadata)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=message):
            load_user_model(tmp_path / "m.pt", blobs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20


@pytest.mark.parametrize("architecture, message", [
    (None, "give your model's code as --model package.module:function"),
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
    assert "both --model and --data" in " ".join(result.output.split())
