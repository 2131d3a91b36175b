"""The flight artifact of a compressed model: graph description, verification, pipeline, CLI."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from conftest import make_blobs, tiny_mlp
from torch import nn
from typer.testing import CliRunner

from satcompress import runtime, stages
from satcompress.artifact import ArtifactError, encode_artifact, read_artifact
from satcompress.cli import app
from satcompress.onnx_export import export_onnx
from satcompress.pipeline.base_model import TrainedModel
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.flight import (
    build_artifact,
    fec_bytes,
    graph_from_onnx,
    task_metadata,
    verify_artifact,
)
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.runner import BudgetNotMet, run_recipe
from satcompress.quantize import fold_weight_quantizers
from satcompress.runtime import UnsupportedOperatorError
from satcompress.tasks import registry

REGISTERED = stages.load_builtin_stages()
W8A8 = REGISTERED["post_training_quantize"](weight_bits=8, quantize_activations=True)


def onnx_graph(model: nn.Module, x: np.ndarray):
    return graph_from_onnx(fold_weight_quantizers(export_onnx(model, torch.from_numpy(x[:1]))))


# --- the graph description ----------------------------------------------------------------------


def test_qdq_layers_become_integer_layers_with_integer_weights():
    data = make_blobs()
    graph, tensors = onnx_graph(stages.apply(tiny_mlp(), W8A8, data), data.test.x)
    operators = [node["op"] for node in graph["nodes"]]
    assert operators.count("QuantGemm") == 6 and operators.count("QuantizeLinear") == 6
    assert "DequantizeLinear" not in operators and "MatMul" not in operators
    for node in (node for node in graph["nodes"] if node["op"] == "QuantGemm"):
        activation, _, zero_point, weight = node["in"][:4]
        assert tensors[weight].dtype == np.int8 and tensors[zero_point].dtype == np.uint8
        assert activation.startswith("v")  # reads the uint8 output of a QuantizeLinear


def test_the_header_uses_short_names_and_leaves_defaults_out():
    data = make_blobs()
    graph, tensors = onnx_graph(tiny_mlp(), data.test.x)
    names = {name for node in graph["nodes"] for name in node["in"] + node["out"]} | set(tensors)
    assert all(re.fullmatch(r"v\d+|c\d+|x|logits", name) for name in names)
    gemm = next(node for node in graph["nodes"] if node["op"] == "Gemm")
    assert gemm["attrs"] == {"transB": 1}  # alpha, beta, transA are the defaults
    assert len(json.dumps(graph)) < 1500


def test_clustered_weights_are_stored_as_floats_with_few_distinct_values():
    data = make_blobs()
    config = REGISTERED["weight_cluster"](n_clusters=8, finetune_epochs=0)
    _, tensors = onnx_graph(stages.apply(tiny_mlp(), config, data), data.test.x)
    weights = [t for t in tensors.values() if t.ndim == 2 and t.size >= 16 * 16]
    assert weights and all(t.dtype == np.float32 and len(np.unique(t)) <= 8 for t in weights)


class CumulativeSum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


def test_an_unsupported_operator_fails_the_build_naming_it(tmp_path):
    with pytest.raises(UnsupportedOperatorError, match=r"uses operator\(s\) CumSum.*Supported operators: Abs"):
        build_artifact(CumulativeSum(), torch.zeros(1, 6), {"task": "tiny"}, tmp_path / "m.sca")
    assert not (tmp_path / "m.sca").exists()


# --- verification -------------------------------------------------------------------------------


class BlobTask(registry.Task):
    """The tiny blobs problem dressed as a registered task: its own data, accuracy as metric."""

    def load(self, seed: int = 0, **options):
        return make_blobs(seed=seed)

    def evaluate(self, model, data):
        from satcompress.training import predict_proba

        return {"accuracy": float((predict_proba(model, data.test.x).argmax(1) == data.test.y).mean())}


BLOBS = BlobTask("blobs", "tiny", "satcompress.tasks.flares", "unused:unused", {})


def test_verify_reports_agreement_metrics_and_checksum(tmp_path):
    data = make_blobs()
    model = stages.apply(tiny_mlp(), W8A8, data)
    artifact = build_artifact(model, torch.from_numpy(data.test.x[:1]),
                              task_metadata(BLOBS, data), tmp_path / "m.sca")
    report = verify_artifact(tmp_path / "m.sca", model, data, BLOBS)
    assert report.passed and report.differing_predictions == 0 and report.examples == len(data.test)
    assert report.quantized_activations and report.max_abs_logit_difference <= report.tolerance
    assert report.metrics == report.framework_metrics and "accuracy" in report.metrics
    assert report.sha256 == artifact.sha256 and report.size_bytes == (tmp_path / "m.sca").stat().st_size
    assert json.loads(json.dumps(report.to_dict()))["passed"] is True


def test_the_metadata_carries_what_flight_software_needs(real_data_dir):
    task = registry.get_task("flares")
    data = task.load(seed=0)
    metadata = task_metadata(task, data)
    assert metadata["class_names"] == list(data.class_names) and metadata["input_shape"] == [25]
    assert metadata["preprocessing"]["sharp_scaler"]["mean"]  # the fitted scaling constants
    assert json.loads(json.dumps(metadata)) == metadata


@pytest.mark.parametrize("task_name, options, width", [
    ("flares", {}, 0.125),  # the whole real test split
    ("transients", {"max_objects": 30}, 0.25),  # a real subset (the full split: benchmarks/)
])
def test_runtime_predictions_equal_torch_on_real_data(task_name, options, width, real_data_dir, tmp_path):
    task = registry.get_task(task_name)
    data = task.load(seed=0, **options)
    torch.manual_seed(0)
    model = stages.apply(task.build_model(data, width_multiplier=width), W8A8, data)
    build_artifact(model, torch.from_numpy(data.test.x[:1]), task_metadata(task, data), tmp_path / "m.sca")
    flight = runtime.load(tmp_path / "m.sca")
    x = np.concatenate([data.train.x, data.val.x, data.test.x]) if options else data.test.x
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(flight.run(x).argmax(1), expected.argmax(1))


# --- the pipeline and the command line ----------------------------------------------------------


RECIPE = Recipe("prune-int8", (REGISTERED["magnitude_prune"](sparsity=0.5, finetune_epochs=0), W8A8))


@pytest.fixture
def compressed(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.TASKS, "blobs", BLOBS)
    trained = TrainedModel(task=BLOBS, model=tiny_mlp(), data=make_blobs(), metrics={})
    return run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3), tmp_path


def test_compress_writes_a_verified_artifact_and_checks_the_budget_on_it(compressed):
    result, out = compressed
    report = json.loads((out / "stages.json").read_text())
    assert report["artifact"]["verification"]["passed"] and report["fits_budget"]
    flight = report["artifact"]["measurement"]
    assert flight["theoretical_bytes"] == (out / "model.sca").stat().st_size
    assert flight["peak_ram_bytes"] == runtime.load(out / "model.sca").peak_buffer_bytes
    assert result.rows()[-1]["counted"] == "artifact file, runtime"
    assert "| artifact model.sca |" in (out / "summary.md").read_text()
    run = json.loads((out / "run.json").read_text())
    assert run["artifact"]["checkpoint"] == "checkpoints/stage2-post_training_quantize.pt"


def test_a_byte_budget_between_theoretical_and_artifact_size_is_judged_on_the_artifact(compressed, tmp_path):
    result, _ = compressed
    size = result.flight.theoretical_bytes
    assert result.final.theoretical_bytes < size  # the file adds a header, the metadata, scales
    trained = TrainedModel(task=BLOBS, model=tiny_mlp(), data=make_blobs(), metrics={})
    with pytest.raises(BudgetNotMet, match=r"the artifact breaks max_bytes: \d+ > allowed"):
        run_recipe(trained, RECIPE, Budget(max_bytes=size - 1), tmp_path / "again", latency_repeats=3)
    run_recipe(trained, RECIPE, Budget(max_bytes=size), tmp_path / "again", latency_repeats=3)


cli = CliRunner()


def test_cli_verify_loads_the_checkpoint_the_run_recorded(compressed):
    _, out = compressed
    result = cli.invoke(app, ["verify", str(out / "model.sca"), "--task", "blobs"])
    assert result.exit_code == 0, result.output
    assert "differing_predictions" in result.output and "verified" in result.output


def test_cli_verify_refuses_a_checkpoint_changed_since_the_run(compressed):
    _, out = compressed
    checkpoint = out / "checkpoints" / "stage2-post_training_quantize.pt"
    checkpoint.write_bytes(checkpoint.read_bytes() + b"tampered")
    result = cli.invoke(app, ["verify", str(out / "model.sca"), "--task", "blobs"])
    assert result.exit_code == 2 and "changed since the run wrote it" in result.output


def test_cli_verify_refuses_a_pickled_module_as_model_in_one_line(compressed):
    _, out = compressed
    stray = out / "stray.pt"
    torch.save(tiny_mlp(), stray)
    result = cli.invoke(app, ["verify", str(out / "model.sca"), "--task", "blobs", "--model", str(stray)])
    assert result.exit_code == 2 and "not a satcompress stage checkpoint" in result.output
    assert "Traceback" not in result.output


def test_cli_verify_refuses_an_artifact_of_another_task(compressed, real_data_dir):
    _, out = compressed
    result = cli.invoke(app, ["verify", str(out / "model.sca"), "--task", "flares"])
    assert result.exit_code == 2 and "built for task 'blobs'" in result.output


# --- forward error correction ------------------------------------------------------------------


def flip_one_byte(path, position: int) -> None:
    content = bytearray(path.read_bytes())
    content[position] ^= 0x10
    path.write_bytes(bytes(content))


def test_a_recipe_artifact_carries_fec_whose_parity_the_budget_counts(compressed):
    result, out = compressed
    assert result.recipe.fec  # the default
    stored = read_artifact(out / "model.sca")
    plain = len(encode_artifact(stored.graph, stored.tensors, stored.metadata))
    size = (out / "model.sca").stat().st_size
    check = result.verification
    assert stored.fec_parity == check.fec_parity == 8
    assert check.fec_bytes == fec_bytes(stored) == size - plain > 0
    assert result.flight.theoretical_bytes == check.size_bytes == size  # parity included
    assert Budget(max_bytes=plain).violations(result.flight, result.measurements[0])
    assert "Forward error correction: ON" in (out / "report.md").read_text()
    assert json.loads((out / "stages.json").read_text())["recipe"]["fec"] is True


def test_an_fec_artifact_with_a_flipped_byte_loads_verifies_and_says_so(compressed):
    result, out = compressed
    size = (out / "model.sca").stat().st_size
    for position in (6, size // 2, size - 1):  # the parity count, a block, the last parity byte
        flip_one_byte(out / "model.sca", position)
    report = verify_artifact(out / "model.sca", result.model, make_blobs(), BLOBS)
    assert report.passed and report.corrected_bytes == 3
    assert report.sha256 == result.verification.sha256  # the content's digest, after correction
    answer = cli.invoke(app, ["verify", str(out / "model.sca"), "--task", "blobs"])
    assert answer.exit_code == 0, answer.output
    assert "repaired" in answer.output and "corrected_bytes" in answer.output


def test_without_fec_one_flipped_byte_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.TASKS, "blobs", BLOBS)
    trained = TrainedModel(task=BLOBS, model=tiny_mlp(), data=make_blobs(), metrics={})
    result = run_recipe(trained, dataclasses.replace(RECIPE, fec=False), Budget(), tmp_path,
                        latency_repeats=3)
    assert result.verification.fec_parity == result.verification.fec_bytes == 0
    assert "Forward error correction: OFF" in (tmp_path / "report.md").read_text()
    flip_one_byte(tmp_path / "model.sca", (tmp_path / "model.sca").stat().st_size // 2)
    with pytest.raises(ArtifactError, match="fails its CRC32 check"):
        runtime.load(tmp_path / "model.sca")


@pytest.mark.parametrize("recipe_fec, flags, expected", [
    (True, [], True), (True, ["--no-fec"], False), (False, [], False), (False, ["--fec"], True)])
def test_cli_compress_fec_flag_overrides_the_recipe(recipe_fec, flags, expected, tmp_path,
                                                     monkeypatch):
    from satcompress.pipeline import base_model, runner

    monkeypatch.setitem(registry.TASKS, "blobs", BLOBS)
    monkeypatch.setattr(base_model, "cached_base_model", lambda *args, **kwargs: TrainedModel(
        task=BLOBS, model=tiny_mlp(), data=make_blobs(), metrics={}))
    seen = []

    def stop(trained, recipe, *args, **kwargs):
        seen.append(recipe)
        raise ValueError("stopped before compressing")

    monkeypatch.setattr(runner, "run_recipe", stop)
    path = dataclasses.replace(RECIPE, fec=recipe_fec).save(tmp_path / "recipe.toml")
    answer = cli.invoke(app, ["compress", "--task", "blobs", "--recipe", str(path),
                              "--out", str(tmp_path / "out"), *flags])
    assert answer.exit_code == 2 and "stopped before compressing" in answer.output
    assert [recipe.fec for recipe in seen] == [expected]
    assert seen[0].stages == RECIPE.stages


def test_a_stored_positional_encoding_is_regenerated_not_stored(tmp_path):
    from conftest import make_sequences, tiny_t2

    model, data = tiny_t2(), make_sequences()
    encoding = model.positional_encoding.numpy()
    artifact = build_artifact(model, torch.from_numpy(data.test.x[:1]), {"task": "tiny"},
                              tmp_path / "m.sca")
    assert not any(t.shape == encoding.shape and np.array_equal(t, encoding)
                   for t in artifact.tensors.values())
    generators = [n for n in artifact.graph["nodes"] if n["op"] == "SinusoidalPositionalEncoding"]
    assert len(generators) == 1 and generators[0]["attrs"]["shape"] == list(encoding.shape)
    with torch.inference_mode():
        expected = model(torch.from_numpy(data.test.x)).numpy()
    np.testing.assert_allclose(runtime.load(tmp_path / "m.sca").run(data.test.x), expected,
                               atol=1e-5)


def test_a_tensor_that_only_resembles_the_encoding_stays_stored():
    from satcompress.pipeline.flight import generated_constants
    from satcompress.runtime.kernels import sinusoidal_positional_encoding

    almost = sinusoidal_positional_encoding(4, 6)[None].copy()
    almost.view(np.uint32)[0, 3, 5] ^= 1  # one ulp away
    graph = {"nodes": []}
    kept_graph, kept = generated_constants(graph, {"c0": almost})
    assert kept_graph["nodes"] == [] and set(kept) == {"c0"}


def test_cli_verify_finds_the_run_of_a_rejected_artifact(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.TASKS, "blobs", BLOBS)
    trained = TrainedModel(task=BLOBS, model=tiny_mlp(), data=make_blobs(), metrics={})
    with pytest.raises(BudgetNotMet):
        run_recipe(trained, RECIPE, Budget(max_bytes=10), tmp_path, latency_repeats=3)
    result = cli.invoke(app, ["verify", str(tmp_path / "rejected" / "model.sca"), "--task", "blobs"])
    assert result.exit_code == 0, result.output
