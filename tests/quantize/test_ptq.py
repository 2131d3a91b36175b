"""Post-training quantization: calibration, stored bytes, ONNX QDQ export and ONNX Runtime.

Also the folding of exported weight quantizers into integer initializers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from satcompress import stages
from satcompress.measure import theoretical_bytes
from satcompress.onnx_export import export_onnx, run_onnx
from satcompress.quantize import (
    PostTrainingQuantizeConfig,
    fold_weight_quantizers,
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    calibrate,
    post_training_quantize,
    quantizable_layers,
    quantize_report,
    quantized_layers,
)


def _case(kind: str):
    return (tiny_mlp(), make_blobs()) if kind == "mlp" else (tiny_t2(), make_sequences())


def test_quantizable_layers_of_both_architectures_and_exclusions():
    assert quantizable_layers(tiny_mlp()) == [
        "stem", "blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2", "head"]
    t2_layers = quantizable_layers(tiny_t2(), exclude=("head",))
    assert t2_layers[0] == "embedding" and "head" not in t2_layers and len(t2_layers) == 7
    with pytest.raises(ValueError, match="does not have"):
        quantizable_layers(tiny_mlp(), exclude=("nope",))


def test_minmax_calibration_records_each_layers_input_range():
    model, data = tiny_mlp(), make_blobs()
    x = torch.from_numpy(data.train.x[:300])
    bounds = calibrate(model, ["stem", "head"], x)
    assert bounds["stem"] == (x.min().item(), x.max().item())
    with torch.no_grad():
        head_input = model.norm(model.blocks(model.stem(x)))
    assert bounds["head"] == pytest.approx((head_input.min().item(), head_input.max().item()))


def test_default_is_w8a8_with_weights_reduced_to_seven_bits_against_int16_saturation():
    model, data = _case("mlp")
    result = post_training_quantize(model, PostTrainingQuantizeConfig(), data)
    layers = quantized_layers(result)
    assert list(layers) == quantizable_layers(model)
    assert all(layer.weight_bits == 7 and layer.quantize_input for layer in layers.values())
    assert max(layer.integer_weight().abs().max().item() for layer in layers.values()) == 63
    full = post_training_quantize(model, PostTrainingQuantizeConfig(reduce_range=False), data)
    assert {layer.weight_bits for layer in quantized_layers(full).values()} == {8}
    weight_only = PostTrainingQuantizeConfig(quantize_activations=False)
    assert weight_only.stored_weight_bits() == 8


def test_theoretical_bytes_count_weights_at_their_width_and_every_scale():
    model, data = _case("t2")
    float_bytes = theoretical_bytes(model)
    names = quantizable_layers(model)
    weights = [model.get_submodule(name).weight for name in names]
    int4 = post_training_quantize(
        model, PostTrainingQuantizeConfig(weight_bits=4, quantize_activations=False), None)
    expected = (float_bytes - sum(4 * w.numel() for w in weights)
                + sum(-(-w.numel() * 4 // 8) + 4 * w.shape[0] for w in weights))
    assert theoretical_bytes(int4) == expected
    w8a8 = post_training_quantize(model, PostTrainingQuantizeConfig(reduce_range=False), data)
    activation_params = len(names) * (4 + 1)  # float32 scale + uint8 zero point per layer
    int8_extra = sum(w.numel() // 2 for w in weights)  # 8 instead of 4 bits per weight
    assert theoretical_bytes(w8a8) == expected + int8_extra + activation_params


@pytest.mark.parametrize("kind, settings, activation_inputs", [
    ("t2", {}, 6),  # query, key and value share one quantized input: 8 layers, 6 inputs
    ("mlp", {"weight_bits": 4, "quantize_activations": False}, 0),
])
def test_onnx_export_is_a_qdq_graph_that_onnx_runtime_reproduces(kind, settings, activation_inputs):
    model, data = _case(kind)
    result = stages.apply(model, PostTrainingQuantizeConfig(**settings), data)
    x = torch.from_numpy(data.test.x)
    with torch.no_grad():
        expected = result(x).numpy()
    exported = export_onnx(result, x[:1])
    nodes = onnx.load_from_string(exported).graph.node
    scales = [node.input[1] for node in nodes if node.op_type == "DequantizeLinear"]
    assert sorted(name for name in scales if name.endswith("weight_scale")) == sorted(
        f"{name}.weight_scale" for name in quantized_layers(result))
    assert sum(name.endswith("input_scale") for name in scales) == activation_inputs
    assert len(scales) == [node.op_type for node in nodes].count("QuantizeLinear")
    assert np.allclose(run_onnx(exported, x.numpy()), expected, atol=1e-5, rtol=1e-5)

    folded = fold_weight_quantizers(exported)
    graph = onnx.load_from_string(folded).graph
    onnx.checker.check_model(onnx.load_from_string(folded))
    integer_weights = [tensor for tensor in graph.initializer
                       if tensor.data_type == onnx.TensorProto.INT8 and len(tensor.dims) >= 2]
    assert len(integer_weights) == len(quantized_layers(result))
    float_weights = {f"{name}.weight" for name in quantized_layers(result)}
    assert not float_weights & {tensor.name for tensor in graph.initializer}
    assert [node.op_type for node in graph.node].count("QuantizeLinear") == activation_inputs
    assert len(folded) < len(exported)
    assert np.array_equal(run_onnx(folded, x.numpy()), run_onnx(exported, x.numpy()))


def test_w8a8_stays_close_to_the_float_model():
    model, data = _case("t2")
    result = post_training_quantize(model, PostTrainingQuantizeConfig(), data)
    x = torch.from_numpy(data.test.x)
    with torch.no_grad():
        assert torch.allclose(result(x), model(x), atol=0.05)
    assert isinstance(result.embedding, QuantConv1d)
    assert isinstance(result.blocks[0].attention.query, QuantLinear)


def test_direct_call_leaves_the_input_model_untouched():
    model, data = _case("mlp")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    post_training_quantize(model, PostTrainingQuantizeConfig(), data)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert type(model.stem) is torch.nn.Linear


def test_activation_calibration_needs_data_but_weight_only_does_not():
    with pytest.raises(ValueError, match="pass the task's data"):
        post_training_quantize(tiny_mlp(), PostTrainingQuantizeConfig(), None)
    post_training_quantize(tiny_mlp(), PostTrainingQuantizeConfig(quantize_activations=False), None)


@pytest.mark.parametrize("settings, message", [
    ({"weight_bits": 1}, "from 2 to 8"),
    ({"observer": "histogram"}, "observer must be one of"),
    ({"percentile": 40.0}, "percentile must be in"),
    ({"calibration_samples": 0}, "calibration_samples must be >= 1"),
])
def test_bad_settings_are_refused_with_a_clear_message(settings, message):
    with pytest.raises(ValueError, match=message):
        PostTrainingQuantizeConfig(**settings)


def test_layer_bits_override_the_width_of_the_named_layers():
    model, data = tiny_mlp(), make_blobs()
    config = PostTrainingQuantizeConfig(weight_bits=8, quantize_activations=False,
                                        layer_bits=(("blocks.0.fc1", 2), ("head", 4)),
                                        exclude=("stem",))
    layers = quantized_layers(stages.apply(model, config, data))
    assert {name: layer.weight_bits for name, layer in layers.items()} == {
        "blocks.0.fc1": 2, "blocks.0.fc2": 8, "blocks.1.fc1": 8, "blocks.1.fc2": 8, "head": 4}
    assert stages.config_from_dict(stages.config_to_dict(config)) == config
    with pytest.raises(ValueError, match="exclude keeps in float"):
        PostTrainingQuantizeConfig(layer_bits=(("stem", 4),), exclude=("stem",))
    with pytest.raises(ValueError, match="bits from 2 to 8"):
        PostTrainingQuantizeConfig(layer_bits=(("stem", 16),))
    with pytest.raises(ValueError, match="not quantizable"):
        stages.apply(model, PostTrainingQuantizeConfig(layer_bits=(("norm", 4),),
                                                       quantize_activations=False), data)


class _Mixed(torch.nn.Module):
    """A Conv2d, its BatchNorm, a circular-padded Conv1d, a GRU and two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.ring = torch.nn.Conv1d(4, 4, 3, padding=1, padding_mode="circular")
        self.gru = torch.nn.GRU(4, 5, batch_first=True)
        self.proj = torch.nn.Linear(5, 5)
        self.head = torch.nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ring(self.norm(self.conv(x)).mean(dim=2))
        return self.head(self.proj(self.gru(h.transpose(1, 2))[0][:, -1]))


def test_conv2d_is_quantized_and_every_layer_left_in_float_is_reported_with_its_reason():
    model = _Mixed().eval()
    assert quantizable_layers(model) == ["conv", "proj", "head"]
    config = PostTrainingQuantizeConfig(quantize_activations=False, exclude=("proj",))
    result = post_training_quantize(model, config, None)
    assert isinstance(result.conv, QuantConv2d) and isinstance(result.head, QuantLinear)
    report = quantize_report(result)
    assert report["quantized"] == {"conv": {"weight_bits": 8, "input": "float"},
                                   "head": {"weight_bits": 8, "input": "float"}}
    reasons = report["float_layers"]
    assert set(reasons) == {"norm", "ring", "gru", "proj"}
    assert "no quantized BatchNorm2d" in reasons["norm"] and "no quantized GRU" in reasons["gru"]
    assert "padding_mode='circular'" in reasons["ring"] and "exclude" in reasons["proj"]
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.allclose(result(x), model(x), atol=0.05)
    with pytest.raises(ValueError, match="carries no quantization report"):
        quantize_report(model)
