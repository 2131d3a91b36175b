"""Tests of satcompress.measure.measurement against hand-computed oracles."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from satcompress.measure.measurement import (
    MacCountWarning,
    Measurement,
    count_macs,
    count_parameters,
    latency_ms,
    measure,
    peak_ram_bytes,
    serialized_bytes,
    theoretical_bytes,
)

FAST = {"repeats": 5, "warmup": 1}


@pytest.fixture(autouse=True)
def _deterministic_and_restored_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def mlp(width: int, n_in: int = 16, n_out: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, n_out))


class HandAttention(nn.Module):
    """Single-head self-attention written with explicit matrix products."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.dim)
        return torch.matmul(scores.softmax(dim=-1), v)


class SdpaAttention(HandAttention):
    """The same attention through F.scaled_dot_product_attention (CPU flash kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x))


def attention_macs(length: int, dim: int) -> int:
    # three projections (L x d @ d x d), Q K^T (L x d @ d x L), weights @ V (L x L @ L x d)
    return 3 * length * dim * dim + length * length * dim + length * length * dim


def state_bytes(model: nn.Module) -> dict[str, tuple[torch.dtype, bytes]]:
    return {
        name: (t.dtype, t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        for name, t in model.state_dict().items()
    }


# ----------------------------------------------------------------------------------- MACs


@pytest.mark.parametrize("n_in,n_out,bias", [(7, 5, True), (16, 3, False)])
def test_macs_linear(n_in, n_out, bias):
    assert count_macs(nn.Linear(n_in, n_out, bias=bias), torch.randn(1, n_in)) == n_in * n_out


@pytest.mark.parametrize("padding,stride", [(0, 1), (2, 1), (1, 2)])
def test_macs_conv1d(padding, stride):
    in_ch, out_ch, k, length = 3, 4, 5, 20
    conv = nn.Conv1d(in_ch, out_ch, k, padding=padding, stride=stride)
    l_out = (length + 2 * padding - k) // stride + 1
    assert count_macs(conv, torch.randn(1, in_ch, length)) == out_ch * in_ch * k * l_out


def test_macs_hand_written_attention():
    length, dim = 6, 8
    x = torch.randn(1, length, dim)
    assert count_macs(HandAttention(dim), x) == attention_macs(length, dim)


def test_macs_sdpa_cpu_kernel_is_counted():
    # PyTorch's own table misses the CPU flash-attention kernel; it must not count as zero
    length, dim = 6, 8
    x = torch.randn(1, length, dim)
    assert count_macs(SdpaAttention(dim), x) == attention_macs(length, dim)


def test_macs_multihead_attention_fast_path_is_counted_and_flag_restored():
    length, dim = 5, 8
    before = torch.backends.mha.get_fastpath_enabled()
    mha = nn.MultiheadAttention(dim, 2, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x)[0]

    expected = 4 * length * dim * dim + 2 * length * length * dim  # q,k,v,out proj + attention
    assert count_macs(SelfAttention(), torch.randn(1, length, dim)) == expected
    assert torch.backends.mha.get_fastpath_enabled() == before


def test_macs_transformer_encoder_layer():
    length, dim, ff = 5, 8, 16
    layer = nn.TransformerEncoderLayer(dim, 2, ff, dropout=0.0, batch_first=True)
    expected = 4 * length * dim * dim + 2 * length * length * dim + 2 * length * dim * ff
    assert count_macs(layer, torch.randn(1, length, dim)) == expected


def test_macs_lstm_and_gru():
    steps, n_in, hidden = 7, 4, 6
    x = torch.randn(1, steps, n_in)
    lstm = nn.LSTM(n_in, hidden, batch_first=True)
    assert count_macs(lstm, x) == steps * 4 * hidden * (n_in + hidden)
    gru = nn.GRU(n_in, hidden, batch_first=True)
    assert count_macs(gru, x) == steps * 3 * hidden * (n_in + hidden)


def test_macs_matrix_vector():
    class MatVec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 4))

        def forward(self, x):
            return self.w @ x[0]

    assert count_macs(MatVec(), torch.randn(1, 4)) == 20


@torch.library.custom_op("satcompress_test::opaque_mm", mutates_args=())
def _opaque_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def test_uncounted_compute_kernel_warns():
    class Opaque(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3))

        def forward(self, x):
            return _opaque_mm(x, self.w)

    with pytest.warns(MacCountWarning, match="opaque_mm"):
        assert count_macs(Opaque(), torch.randn(1, 4)) == 0


# ---------------------------------------------------------------------- parameters and bytes


def test_parameter_counts_and_nonzero():
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2), nn.BatchNorm1d(2))
    manual = (5 * 4 + 4) + (4 * 2 + 2) + (2 + 2)  # BatchNorm: weight and bias, not buffers
    with torch.no_grad():
        model[0].weight[:2].zero_()  # 10 zeros
        model[2].bias.zero_()  # 2 zeros
        model[3].bias.zero_()  # already zero
    assert count_parameters(model) == (manual, manual - 10 - 2 - 2)


def test_tied_parameters_count_once():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight
    assert count_parameters(model)[0] == 16
    assert theoretical_bytes(model) == 16 * 4


def test_theoretical_bytes_float32_and_buffers():
    model = mlp(10)
    params = count_parameters(model)[0]
    assert theoretical_bytes(model) == 4 * params
    bn = nn.BatchNorm1d(6)  # weight, bias, running_mean, running_var: float32; count: int64
    assert theoretical_bytes(bn) == 4 * 6 * 4 + 8
    assert theoretical_bytes(model.half()) == 2 * params


def test_theoretical_bytes_excludes_non_persistent_buffers():
    model = nn.Linear(3, 2)
    model.register_buffer("scratch", torch.zeros(100), persistent=False)
    assert theoretical_bytes(model) == 4 * 8


def test_theoretical_bytes_honours_stored_bits():
    model = mlp(10, n_in=16, n_out=3)
    w0, b0, w1, b1 = 16 * 10, 10, 10 * 3, 3
    model[0].stored_bits = {"weight": 8}
    assert theoretical_bytes(model) == w0 + 4 * (b0 + w1 + b1)
    model[2].stored_bits = {"weight": 4, "bias": 4}  # 30 and 3 values at 4 bits: 15 and 2 bytes
    assert theoretical_bytes(model) == w0 + 4 * b0 + 15 + 2
    # a declaration higher up, in names relative to it; the owning module's wins
    model.stored_bits = {"0.bias": 16, "2.bias": 32}
    assert theoretical_bytes(model) == w0 + 2 * b0 + 15 + 2


def test_stored_bits_errors():
    model = mlp(4)
    model[0].stored_bits = {"wieght": 8}
    with pytest.raises(ValueError, match="wieght.*stores: \\['bias', 'weight'\\]"):
        theoretical_bytes(model)
    model[0].stored_bits = {"weight": 0}
    with pytest.raises(ValueError, match="positive integer"):
        theoretical_bytes(model)
    model[0].stored_bits = 8
    with pytest.raises(ValueError, match="must be a dict"):
        theoretical_bytes(model)


def test_serialized_bytes_at_least_theoretical_for_float():
    model = mlp(32)
    assert serialized_bytes(model) >= theoretical_bytes(model) == 4 * count_parameters(model)[0]
    assert serialized_bytes(mlp(64)) > serialized_bytes(model)


# ----------------------------------------------------------------------------------- peak RAM


def test_peak_ram_of_mlp_against_oracle():
    width, n_in = 256, 16
    model, x = mlp(width, n_in=n_in), torch.randn(1, n_in)
    activations = peak_ram_bytes(model, x) - theoretical_bytes(model) - x.nbytes
    # Linear output and ReLU output (width floats each) are both live while ReLU runs
    assert 2 * 4 * width <= activations <= 2 * 4 * width + 256


def test_peak_ram_grows_with_width_and_input_length():
    x = torch.randn(1, 16)
    peaks = [peak_ram_bytes(mlp(w), x) for w in (16, 64, 256)]
    assert peaks[0] < peaks[1] < peaks[2]
    conv = nn.Sequential(nn.Conv1d(2, 8, 3), nn.ReLU())
    weights = theoretical_bytes(conv)
    activation = [peak_ram_bytes(conv, torch.randn(1, 2, n)) - weights for n in (32, 128, 512)]
    assert activation[0] < activation[1] < activation[2]


def test_peak_ram_counts_stored_weight_bytes():
    model, x = mlp(64), torch.randn(1, 16)
    full = peak_ram_bytes(model, x)
    model[0].stored_bits = {"weight": 8}
    assert full - peak_ram_bytes(model, x) == 16 * 64 * 3  # 4 -> 1 byte per weight


# ------------------------------------------------------------------------------------ latency


def test_latency_percentiles_and_threads_held_then_restored():
    seen: list[int] = []

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(8, 8)

        def forward(self, x):
            seen.append(torch.get_num_threads())
            return self.linear(x)

    torch.set_num_threads(2)
    p50, p95 = latency_ms(Recorder(), torch.randn(1, 8), repeats=30, warmup=3, threads=1)
    assert p95 >= p50 > 0
    assert len(seen) == 33 and set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_threads_restored_after_failing_forward():
    torch.set_num_threads(2)
    with pytest.raises(ValueError):
        latency_ms(nn.Linear(3, 2), torch.randn(1, 4), repeats=3, warmup=0, threads=1)
    assert torch.get_num_threads() == 2


# ------------------------------------------------------------------------------------ measure


def test_measure_leaves_model_untouched():
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 14, 3)
    )
    model.train()
    model[0].eval()  # a mixed train/eval state must come back exactly
    flags = [m.training for m in model.modules()]
    before = state_bytes(model)
    x = torch.randn(1, 2, 16)
    x_before = x.clone()
    measure(model, x, **FAST)
    assert state_bytes(model) == before  # BatchNorm running stats and counter untouched
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(x, x_before)


def test_measure_record_matches_separate_functions():
    model, x = mlp(12), torch.randn(1, 16)
    torch.set_num_threads(2)
    result = measure(model, x, metrics={"tss": 0.75, "hss": 0.5}, stage="pruned", threads=1, **FAST)
    assert torch.get_num_threads() == 2
    assert (result.parameters, result.nonzero_parameters) == count_parameters(model)
    assert result.serialized_bytes == serialized_bytes(model)
    assert result.theoretical_bytes == theoretical_bytes(model)
    assert result.macs == count_macs(model, x) == 16 * 12 + 12 * 3
    assert result.peak_ram_bytes == peak_ram_bytes(model, x)
    assert result.latency_ms_p95 >= result.latency_ms_p50 > 0
    assert result.threads == 1
    assert result.metrics == {"tss": 0.75, "hss": 0.5}
    assert result.stage == "pruned"


def test_json_and_dict_round_trip():
    result = measure(mlp(8), torch.randn(1, 16), metrics={"tss": 1 / 3}, stage="int8", **FAST)
    assert Measurement.from_dict(result.to_dict()) == result
    assert Measurement.from_json(result.to_json()) == result
    assert Measurement.from_dict(json.loads(result.to_json(indent=2))) == result
    assert json.loads(result.to_json())["metrics"] == {"tss": 1 / 3}


def test_metrics_are_copied():
    metrics = {"tss": 0.5}
    result = measure(mlp(8), torch.randn(1, 16), metrics=metrics, **FAST)
    metrics["tss"] = 0.0
    assert result.metrics == {"tss": 0.5}


def test_summary_row():
    record = Measurement(
        parameters=2000,
        nonzero_parameters=500,
        serialized_bytes=9000,
        theoretical_bytes=8000,
        macs=123456,
        peak_ram_bytes=20000,
        latency_ms_p50=0.25,
        latency_ms_p95=0.5,
        threads=1,
        metrics={"tss": 0.8, "MACs": 1.0},
        stage="pruned",
    )
    row = record.summary_row()
    assert row["stage"] == "pruned"
    assert row["sparsity_%"] == 75.0
    assert (row["serialized_kB"], row["theoretical_kB"], row["peak_RAM_kB"]) == (9.0, 8.0, 20.0)
    assert (row["MACs"], row["p50_ms"], row["p95_ms"]) == (123456, 0.25, 0.5)
    assert row["tss"] == 0.8 and row["metric:MACs"] == 1.0
    assert all(isinstance(v, (str, int, float)) for v in row.values())


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "bad_input,match",
    [
        (torch.randn(2, 16), r"shape \(2, 16\).*batch axis of size 1"),
        (torch.tensor(1.0), r"shape \(\).*batch axis of size 1"),
        ([[0.0] * 16], "must be a torch.Tensor"),
    ],
)
def test_bad_example_input(bad_input, match):
    for call in (
        lambda: measure(mlp(4), bad_input, **FAST),
        lambda: count_macs(mlp(4), bad_input),
        lambda: peak_ram_bytes(mlp(4), bad_input),
        lambda: latency_ms(mlp(4), bad_input, 5, 1, 1),
    ):
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"repeats": 0}, "repeats must be >= 1"),
        ({"repeats": True}, "repeats must be an integer"),
        ({"warmup": -1}, "warmup must be >= 0"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"metrics": {"tss": float("nan")}}, "metric 'tss' is nan"),
        ({"metrics": {"tss": "high"}}, "real numbers"),
        ({"stage": ""}, "stage must be a non-empty string"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure(mlp(4), torch.randn(1, 16), **{**FAST, **kwargs})


def test_not_a_module():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        measure(lambda x: x, torch.randn(1, 3), **FAST)


def test_failing_forward_reports_shape_and_error():
    model = mlp(4, n_in=16)
    model.train()
    for call in (
        lambda: measure(model, torch.randn(1, 7), **FAST),
        lambda: count_macs(model, torch.randn(1, 7)),
        lambda: peak_ram_bytes(model, torch.randn(1, 7)),
    ):
        with pytest.raises(ValueError, match=r"shape \(1, 7\).*RuntimeError.*mat1 and mat2"):
            call()
    assert all(m.training for m in model.modules())


def test_from_dict_rejects_missing_and_unknown_fields():
    data = Measurement(1, 1, 1, 1, 1, 1, 0.1, 0.2, 1).to_dict()
    del data["macs"]
    data["flops"] = 2
    with pytest.raises(ValueError, match=r"missing fields \['macs'\], unknown fields \['flops'\]"):
        Measurement.from_dict(data)


def test_measurement_validates_fields():
    with pytest.raises(ValueError, match="nonzero_parameters"):
        Measurement(1, 2, 1, 1, 1, 1, 0.1, 0.2, 1)
    with pytest.raises(ValueError, match="below latency_ms_p50"):
        Measurement(1, 1, 1, 1, 1, 1, 0.3, 0.2, 1)
    with pytest.raises(ValueError, match="macs must be >= 0"):
        Measurement(1, 1, 1, 1, -1, 1, 0.1, 0.2, 1)
