"""Every supported operator: the NumPy runtime computes what PyTorch computes.

Each tiny model goes the flight route (ONNX export -> graph description -> artifact -> runtime)
and must give the same predictions as the PyTorch model on every input, with logits within
the documented tolerance (``LOGIT_TOLERANCE`` of the logit scale for float activations,
``QUANTIZED_LOGIT_TOLERANCE`` with quantized activations).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from torch import nn
from torch.nn import functional as F

from satcompress import runtime, stages
from satcompress.pipeline.flight import LOGIT_TOLERANCE, QUANTIZED_LOGIT_TOLERANCE, build_artifact
from satcompress.runtime.kernels import KERNELS

REGISTERED = stages.load_builtin_stages()


def to_runtime(model: nn.Module, x: np.ndarray, path) -> runtime.Runtime:
    build_artifact(model, torch.from_numpy(x[:1]), {"task": "tiny"}, path)
    return runtime.load(path)


def assert_runtime_matches_torch(model: nn.Module, x: np.ndarray, path) -> runtime.Runtime:
    flight = to_runtime(model, x, path)
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    actual = flight.run(x)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))
    relative = (QUANTIZED_LOGIT_TOLERANCE if "QuantizeLinear" in flight.operators
                else LOGIT_TOLERANCE)
    assert np.abs(actual - expected).max() <= relative * max(1.0, np.abs(expected).max())
    return flight


class SequenceConv(nn.Module):
    """Strided, padded, grouped Conv1d, max and average pooling, flatten, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, kernel_size=3, stride=2, padding=1, groups=2)
        self.pool = nn.MaxPool1d(2)
        self.average = nn.AvgPool1d(2, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.average(self.pool(torch.relu(self.conv(x.transpose(1, 2)))))
        return self.head(torch.flatten(h, 1))


class ImageConv(nn.Module):
    """Conv2d (padded) + BatchNorm + ReLU + global average pooling on a 6x6 image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(3, 3)
        with torch.no_grad():
            self.norm.running_mean.normal_()
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.norm(self.conv(x.reshape(-1, 1, 6, 6)))))
        return self.head(torch.flatten(h, 1))


class Attention(nn.Module):
    """The t2 attention block alone, then mean pooling and a softmax head."""

    def __init__(self) -> None:
        super().__init__()
        self.block = tiny_t2().blocks[0]
        self.embed = nn.Linear(2, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.block(self.embed(x)).mean(dim=1)), dim=-1)


class Elementwise(nn.Module):
    """clamp, minimum/maximum, where on comparisons (bool tensors), sign, log, abs,
    reciprocal and rsqrt."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.head = nn.Linear(8 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        chosen = ((h > 0) & ~(h == 0.5)) | (h <= -1.0)
        parts = [torch.clamp(h, -0.5, 0.7), torch.clamp(h, min=0.1),
                 torch.maximum(h, torch.minimum(-h, h.flip(1))),
                 torch.where(chosen, h, 0.1 * h) + torch.where(h >= 0.2, 1.0, h.lt(-0.3).float()),
                 torch.sign(h) * torch.log(h.abs() + 0.1),
                 torch.reciprocal(h.abs() + 1.0) + torch.rsqrt(h.abs() + 1.0)]
        return self.head(torch.cat(parts, dim=1))


class Shapes(nn.Module):
    """torch.split and chunk, F.pad (constant, cropping, reflect, replicate) and expand."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(116, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # (batch, 2, 12)
        a, b = torch.split(h, [5, 7], dim=2)
        chunks = torch.chunk(h, 5, dim=2)  # four of 3
        parts = [F.pad(a, (1, 1), value=0.5), F.pad(b, (-1, 0)),
                 F.pad(h, (2, 1), mode="reflect"), F.pad(h, (1, 2), mode="replicate"),
                 chunks[1] * chunks[3], h[:, :1, :].expand(-1, 2, -1)]
        return self.head(torch.cat([part.flatten(1) for part in parts], dim=1))


class ConvVariants(nn.Module):
    """Conv1d/Conv2d with stride, padding, dilation, groups and depthwise; BatchNorm1d/2d in
    eval mode; MaxPool1d/2d, AvgPool1d/2d, adaptive average pooling to 1, Flatten, mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(1, 4, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2))
        self.depthwise2 = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.norm2 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)
        self.depthwise1 = nn.Conv1d(6, 6, 3, padding=1, groups=6)
        self.norm1 = nn.BatchNorm1d(6)
        self.max2, self.max1 = nn.MaxPool2d(2), nn.MaxPool1d(3, stride=2, padding=1)
        self.average2 = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.average1 = nn.AvgPool1d(2)
        self.adaptive2, self.adaptive1 = nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(152, 8)
        self.norm0 = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)
        with torch.no_grad():
            for norm in (self.norm0, self.norm1, self.norm2):
                norm.running_mean.normal_()
                norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = self.norm2(self.depthwise2(self.conv2(x.reshape(-1, 1, 6, 6))))  # (., 4, 3, 6)
        sequence = image.flatten(2)  # (., 4, 18)
        h = torch.relu(self.norm1(self.depthwise1(self.conv1(sequence))))  # (., 6, 9)
        parts = [self.adaptive2(image), self.max2(image), self.average2(image), self.max1(h),
                 self.adaptive1(h), sequence.mean(dim=2), self.average1(h)]
        features = torch.cat([self.flatten(part) for part in parts], dim=1)
        return self.head(self.norm0(self.hidden(features)))


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


FLOAT_MODELS = {
    "linear": (lambda: nn.Linear(6, 3), "blobs"),
    "gelu-sigmoid-tanh": (lambda: nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 8),
                                                nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(),
                                                nn.Linear(8, 3)), "blobs"),
    "activations": (lambda: nn.Sequential(
        nn.Linear(6, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.Hardswish(), nn.Linear(8, 8),
        nn.Hardsigmoid(), nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 8),
        nn.Softplus(beta=2.0, threshold=1.0), nn.Linear(8, 8), nn.ELU(0.7), nn.Linear(8, 8),
        nn.ReLU6(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 8), nn.GELU(approximate="tanh"),
        nn.Linear(8, 3)), "blobs"),
    "elementwise-where-comparisons": (Elementwise, "blobs"),
    "split-pad-expand": (Shapes, "sequences"),
    "conv-pooling-batchnorm-variants": (ConvVariants, "images"),
    "residual-layernorm-relu": (tiny_mlp, "blobs"),
    "conv1d-pooling": (SequenceConv, "sequences"),
    "conv2d-batchnorm-global-pool": (lambda: ImageConv(), "images"),
    "attention-softmax": (Attention, "sequences"),
    "t2": (tiny_t2, "sequences"),
}


def _data(kind: str):
    if kind == "sequences":
        return make_sequences()
    return make_blobs(n_features=36 if kind == "images" else 6)


@pytest.mark.parametrize("name", sorted(FLOAT_MODELS))
def test_float_models_match_torch(name, tmp_path):
    build, kind = FLOAT_MODELS[name]
    assert_runtime_matches_torch(_seeded(build), _data(kind).test.x, tmp_path / "m.sca")


class CumulativeSum(nn.Module):
    """A layer exporting to an operator the runtime has no kernel for (CumSum)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


def test_an_unsupported_operator_is_refused_naming_the_layer_that_uses_it(tmp_path):
    model = nn.Sequential(nn.Linear(6, 6), CumulativeSum())
    with pytest.raises(runtime.UnsupportedOperatorError,
                       match=r"uses operator\(s\) CumSum \(in layer 1 \(CumulativeSum: "
                             r"aten\.cumsum\.default\), ONNX node node_cumsum\), which"):
        build_artifact(model, torch.zeros(1, 6), {"task": "tiny"}, tmp_path / "m.sca")


def test_an_unsupported_operator_setting_is_refused_naming_the_layer(tmp_path):
    model = nn.Sequential(nn.Unflatten(1, (1, 6)), nn.AvgPool1d(4, ceil_mode=True), nn.Flatten())
    with pytest.raises(runtime.UnsupportedOperatorError,
                       match=r"AveragePool at layer 1 \(AvgPool1d: aten\.avg_pool1d\.default\), "
                             r"ONNX node node_avg_pool1d has ceil_mode=1; the flight runtime "
                             r"implements only ceil_mode=0"):
        build_artifact(model, torch.zeros(1, 6), {"task": "tiny"}, tmp_path / "m.sca")


def _compressed(model_name: str, configs) -> tuple[nn.Module, np.ndarray]:
    model, data = (tiny_mlp(), make_blobs()) if model_name == "mlp" else (
        (tiny_t2(), make_sequences()) if model_name == "t2" else (_seeded(SequenceConv), make_sequences()))
    for config in configs:
        model = stages.apply(model, config, data)
    return model, data.test.x


W8A8 = REGISTERED["post_training_quantize"](weight_bits=8, quantize_activations=True)
COMPRESSED = {
    "mlp-int8-weights-uint8-activations": ("mlp", [W8A8]),
    "t2-int8-weights-uint8-activations": ("t2", [W8A8]),
    "conv1d-int8-weights-uint8-activations": ("conv", [W8A8]),
    "mlp-int4-weight-only": ("mlp", [REGISTERED["post_training_quantize"](
        weight_bits=4, quantize_activations=False)]),
    "t2-int4-weight-only": ("t2", [REGISTERED["post_training_quantize"](
        weight_bits=4, quantize_activations=False)]),
    "t2-clustered": ("t2", [REGISTERED["weight_cluster"](n_clusters=8, finetune_epochs=0)]),
    "mlp-low-rank": ("mlp", [REGISTERED["low_rank"](rank_by="rank", rank=3, finetune_epochs=0)]),
    "t2-low-rank": ("t2", [REGISTERED["low_rank"](rank_by="rank", rank=4, finetune_epochs=0)]),
    "mlp-pruned-clustered-int8": ("mlp", [
        REGISTERED["magnitude_prune"](sparsity=0.5, finetune_epochs=0),
        REGISTERED["weight_cluster"](n_clusters=8, finetune_epochs=0), W8A8]),
}


@pytest.mark.parametrize("name", sorted(COMPRESSED))
def test_compressed_models_match_torch(name, tmp_path):
    model, x = _compressed(*COMPRESSED[name])
    assert_runtime_matches_torch(model, x, tmp_path / "m.sca")


def test_quantized_layers_run_as_fused_integer_kernels(tmp_path):
    model, x = _compressed("t2", [W8A8])
    flight = assert_runtime_matches_torch(model, x, tmp_path / "m.sca")
    assert {"QuantGemm", "QuantConv", "QuantizeLinear"} <= set(flight.operators)
    assert "DequantizeLinear" not in flight.operators  # no float copy of any quantized tensor


def test_weight_only_layers_keep_only_their_integer_weights_resident(tmp_path):
    model, x = _compressed("mlp", [REGISTERED["post_training_quantize"](
        weight_bits=8, quantize_activations=False)])
    artifact = build_artifact(model, torch.from_numpy(x[:1]), {"task": "tiny"}, tmp_path / "m.sca")
    flight = runtime.load(tmp_path / "m.sca")
    assert sum(t.dtype == np.int8 and t.ndim == 2 for t in artifact.tensors.values()) == 6
    assert flight.plan.resident_bytes == sum(t.nbytes for t in artifact.tensors.values())


def test_integer_accumulation_is_exact_whatever_the_operand_dtype():
    rng = np.random.default_rng(0)
    depth = 600  # beyond the float32-exact depth: the kernel must switch to float64
    x = rng.integers(0, 256, (3, depth)).astype(np.uint8)
    w = rng.integers(-127, 128, (4, depth)).astype(np.int8)
    zero_point = np.array(3, np.uint8)
    one = np.array(1.0, np.float32)
    (y,) = KERNELS["QuantGemm"].run([x, one, zero_point, w, np.ones(4, np.float32), None], {})
    exact = (x.astype(np.int64) - 3) @ w.astype(np.int64).T
    np.testing.assert_array_equal(y, exact.astype(np.float32))


def test_quantize_linear_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, 300.0, -300.0], np.float32)
    (q,) = KERNELS["QuantizeLinear"].run([x, np.array(1.0, np.float32), np.array(0, np.int8)], {})
    np.testing.assert_array_equal(q, np.array([0, 2, 2, 0, 127, -128], np.int8))


def test_erf_approximation_is_within_a_float32_rounding():
    x = np.linspace(-5, 5, 2001).astype(np.float32)
    (y,) = KERNELS["Erf"].run([x], {})
    exact = np.array([math.erf(value) for value in x.astype(np.float64)])
    assert np.abs(y - exact).max() < 2e-7


@pytest.mark.parametrize("n_positions, d_model", [(1, 2), (12, 16), (50, 7), (100, 128)])
def test_the_positional_encoding_generator_equals_the_t2_network_bit_for_bit(n_positions, d_model):
    from satcompress.networks.t2 import sinusoidal_positional_encoding as torch_encoding

    expected = torch_encoding(n_positions, d_model).numpy()[None]
    (generated,) = KERNELS["SinusoidalPositionalEncoding"].run(
        [], {"shape": [1, n_positions, d_model]})
    assert generated.dtype == np.float32
    np.testing.assert_array_equal(generated.view(np.uint32), expected.view(np.uint32))
