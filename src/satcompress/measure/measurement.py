"""One :class:`Measurement` record, the same for every model at every compression stage.

A measurement answers the questions a flight or alert-broker budget asks of a PyTorch model:
how many parameters it has (and how many are non-zero), how many bytes it takes on disk as a
naive float checkpoint and at its declared storage bit widths, how many multiply-accumulates
(MACs) one inference costs, how much RAM one inference needs, and how long one inference takes.

Every quantity is of ONE batch-1 inference in eval mode under :func:`torch.inference_mode`,
and every function here leaves the model as it found it (parameters, buffers and the
train/eval flag of every submodule).

Methods
-------
Parameters
    :func:`count_parameters`: ``model.parameters()`` (shared parameters once), all of them,
    trainable or not; non-zero ones counted with :func:`torch.count_nonzero`.
Serialized bytes
    :func:`serialized_bytes`: the length of ``torch.save(model.state_dict())`` written into a
    :class:`io.BytesIO` -- what a naive checkpoint takes on disk, container overhead included.
Theoretical bytes
    :func:`theoretical_bytes`: over every tensor in the state dict (parameters and persistent
    buffers; a tensor shared under several names once), ``ceil(numel * bits / 8)``, where
    ``bits`` is the dtype's width unless a module declares otherwise in an attribute
    ``stored_bits: dict[str, int]`` (see :func:`theoretical_bytes`).
MACs
    :func:`count_macs`: :class:`torch.utils.flop_counter.FlopCounterMode` FLOPs / 2. PyTorch's
    own FLOP table has no entry for several CPU kernels, which it would silently count as zero:
    the CPU flash kernel behind ``F.scaled_dot_product_attention``, the oneDNN LSTM kernel
    (``mkldnn_rnn_layer``), ``mv``/``addmv``/``dot``/``vdot``/``addr``, and the fused "fast path"
    of ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``. This module adds formulas
    for the former and switches the fast path off while counting (the slow path does the same
    matrix products, which are counted). Any other kernel that looks like compute but has no
    formula raises a :class:`MacCountWarning` naming it, so an undercount never passes silently.
Peak RAM
    :func:`peak_ram_bytes`: weight bytes (:func:`theoretical_bytes`, what the deployed model
    holds resident) + the input's bytes + the peak of the running sum of every CPU allocation
    and free, in event order, recorded by ``torch.profiler.profile(profile_memory=True)`` during
    one forward pass (after one unprofiled warm-up pass). The allocator events include the
    scratch buffers kernels use internally (e.g. a convolution's im2col buffer), which a count
    of output tensors would miss.
Latency
    :func:`latency_ms`: ``warmup`` untimed then ``repeats`` individually timed forward passes
    with :func:`time.perf_counter_ns`, ``torch.set_num_threads(threads)`` held during the run
    and restored afterwards, Python's garbage collector paused while timing; the median and
    95th percentile (linear interpolation) in milliseconds.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "Measurement",
    "MacCountWarning",
    "measure",
    "count_macs",
    "count_parameters",
    "serialized_bytes",
    "theoretical_bytes",
    "peak_ram_bytes",
    "latency_ms",
    "latency_samples_ms",
    "STORED_BITS_ATTRIBUTE",
]

STORED_BITS_ATTRIBUTE = "stored_bits"
"""Name of the module attribute that declares stored bit widths (tensor name -> bits)."""

_KILO = 1000.0


class MacCountWarning(UserWarning):
    """A kernel that looks like compute ran with no FLOP formula: the MAC count is too low."""


# --------------------------------------------------------------------------------------------
# Input validation and model-state helpers
# --------------------------------------------------------------------------------------------


def _check_model(model: Any, where: str) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"{where}: model must be a torch.nn.Module, got {type(model).__name__}."
        )
    named = (("parameter", model.named_parameters()), ("buffer", model.named_buffers()))
    for kind, tensors in named:
        for name, tensor in tensors:
            if tensor.device.type != "cpu":
                raise ValueError(
                    f"{where}: {kind} '{name}' is on device '{tensor.device}'; satcompress "
                    "measures on the CPU, so move the model there first with model.cpu()."
                )


def _check_input(example_input: Any, where: str) -> None:
    if not isinstance(example_input, torch.Tensor):
        raise ValueError(
            f"{where}: example_input must be a torch.Tensor holding ONE example with a leading "
            f"batch axis of size 1, got {type(example_input).__name__}."
        )
    if example_input.dim() == 0 or example_input.shape[0] != 1:
        raise ValueError(
            f"{where}: example_input has shape {tuple(example_input.shape)}, but it must be ONE "
            "example with a leading batch axis of size 1 (every measurement is of a batch-1 "
            "inference); pass x[:1] of a batch, or x.unsqueeze(0) of a single example."
        )
    if example_input.device.type != "cpu":
        raise ValueError(
            f"{where}: example_input is on device '{example_input.device}'; satcompress "
            "measures on the CPU, so pass example_input.cpu()."
        )


def _check_int(name: str, value: Any, minimum: int, where: str, hint: str) -> int:
    hint = f" {hint}" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}.{hint}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}.{hint}")
    return int(value)


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode + inference mode, restoring every submodule's own train/eval flag after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def _num_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _forward(model: nn.Module, example_input: torch.Tensor, where: str) -> Any:
    try:
        return model(example_input)
    except Exception as error:  # the model's own failure, reported with the input it got
        raise ValueError(
            f"{where}: the model's forward pass failed on example_input of shape "
            f"{tuple(example_input.shape)} and dtype {example_input.dtype}: "
            f"{type(error).__name__}: {error}. Pass an input of the shape and dtype the model "
            "was trained on, with a leading batch axis of 1."
        ) from error


# --------------------------------------------------------------------------------------------
# Parameters and bytes
# --------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Count all parameters of a model and the non-zero ones.

    Parameters
    ----------
    model : torch.nn.Module
        The model; a parameter shared by several submodules counts once. Trainable and frozen
        parameters both count; buffers (e.g. BatchNorm running statistics) do not.

    Returns
    -------
    tuple of int
        ``(total, nonzero)``.
    """
    _check_model(model, "count_parameters")
    total = 0
    nonzero = 0
    with torch.no_grad():
        for parameter in model.parameters():
            total += parameter.numel()
            nonzero += int(torch.count_nonzero(parameter))
    return total, nonzero


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``, the size of a naive checkpoint on disk.

    Parameters
    ----------
    model : torch.nn.Module
        The model.

    Returns
    -------
    int
        Length of the serialized state dict, container overhead and tensor names included.
    """
    _check_model(model, "serialized_bytes")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _stored_tensors(model: nn.Module) -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """State-dict tensors, each underlying tensor once, and every state-dict tensor name."""
    seen: set[int] = set()
    unique: list[tuple[str, torch.Tensor]] = []
    names: list[str] = []
    for name, value in model.state_dict(keep_vars=True).items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. a module's non-tensor "_extra_state"
        names.append(name)
        if id(value) in seen:
            continue  # one tensor stored under two names (tied weights) is stored once
        seen.add(id(value))
        unique.append((name, value))
    return unique, names


def _declared_bits(model: nn.Module, tensor_names: list[str]) -> dict[str, int]:
    """Map full state-dict names to the bit widths modules declare in ``stored_bits``.

    A declaration on a module uses names relative to that module ("weight" on the module
    that owns it, or "0.weight" on its parent). Where several modules declare a width for the
    same tensor, the innermost module (the closest owner) wins.
    """
    where = "theoretical_bytes"
    known = set(tensor_names)
    declared: dict[str, tuple[int, int]] = {}  # full name -> (depth of declaring module, bits)
    for prefix, module in model.named_modules(remove_duplicate=False):
        declaration = getattr(module, STORED_BITS_ATTRIBUTE, None)
        if declaration is None:
            continue
        owner = f"module '{prefix}'" if prefix else "the root module"
        owner = f"{owner} ({type(module).__name__})"
        if not isinstance(declaration, Mapping):
            raise ValueError(
                f"{where}: {owner} has {STORED_BITS_ATTRIBUTE} = {declaration!r}; it must be a "
                "dict mapping tensor names to bit widths, e.g. {'weight': 8}."
            )
        depth = prefix.count(".") + 1 if prefix else 0
        for local_name, bits in declaration.items():
            if (
                not isinstance(local_name, str)
                or isinstance(bits, bool)
                or not isinstance(bits, numbers.Integral)
                or bits < 1
            ):
                raise ValueError(
                    f"{where}: {owner} declares {STORED_BITS_ATTRIBUTE}[{local_name!r}] = "
                    f"{bits!r}; each entry must map a tensor name (str) to a positive integer "
                    "bit width, e.g. {'weight': 8}."
                )
            full_name = f"{prefix}.{local_name}" if prefix else local_name
            if full_name not in known:
                local = sorted(
                    name[len(prefix) + 1 :] if prefix else name
                    for name in tensor_names
                    if not prefix or name.startswith(prefix + ".")
                )
                raise ValueError(
                    f"{where}: {owner} declares {STORED_BITS_ATTRIBUTE} for '{local_name}', but "
                    f"the state dict has no tensor '{full_name}'. Names are relative to the "
                    f"declaring module; it stores: {local}."
                )
            if full_name not in declared or depth >= declared[full_name][0]:
                declared[full_name] = (depth, int(bits))
    return {name: bits for name, (_, bits) in declared.items()}


def theoretical_bytes(model: nn.Module) -> int:
    """Bytes of every stored tensor at its stored bit width, rounded up per tensor.

    Parameters
    ----------
    model : torch.nn.Module
        The model. Every tensor of its state dict counts: parameters and persistent buffers
        (e.g. BatchNorm running statistics), a tensor stored under several names once. The bit
        width of a tensor is its dtype's (32 for float32, 64 for int64, ...) unless a module
        declares it in an attribute ``stored_bits: dict[str, int]`` mapping tensor names,
        relative to that module, to bits -- e.g. ``linear.stored_bits = {"weight": 8}`` after
        quantizing ``linear.weight`` to int8 while keeping it as float for PyTorch.

    Returns
    -------
    int
        ``sum(ceil(numel * bits / 8))`` over stored tensors.

    Raises
    ------
    ValueError
        If a ``stored_bits`` declaration is not a dict of positive integers, or names a tensor
        the state dict does not hold.
    """
    _check_model(model, "theoretical_bytes")
    tensors, names = _stored_tensors(model)
    declared = _declared_bits(model, names)
    total = 0
    for name, tensor in tensors:
        bits = declared.get(name, tensor.element_size() * 8)
        total += (tensor.numel() * bits + 7) // 8
    return total


# --------------------------------------------------------------------------------------------
# MACs
# --------------------------------------------------------------------------------------------


def _prod(values: Any) -> int:
    return math.prod(int(v) for v in values)


def _sdpa_cpu_flop(
    query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    # (..., L_q, E) @ (..., E, L_k) then (..., L_q, L_k) @ (..., L_k, E_v); the leading dims of
    # the query carry all heads (grouped-query attention broadcasts key/value heads to them).
    batch = _prod(query[:-2])
    l_q, e_qk = int(query[-2]), int(query[-1])
    l_k, e_v = int(key[-2]), int(value[-1])
    return 2 * batch * l_q * l_k * (e_qk + e_v)


def _mkldnn_rnn_layer_flop(
    input: Any, weight_ih: Any, weight_hh: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    # every (step, batch) row multiplies the input by W_ih and the hidden state by W_hh
    rows = _prod(input[:-1])
    return 2 * rows * (_prod(weight_ih) + _prod(weight_hh))


def _mv_flop(matrix: Any, vector: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * _prod(matrix)


def _addmv_flop(
    bias: Any, matrix: Any, vector: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return 2 * _prod(matrix)


def _dot_flop(a: Any, b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * _prod(a)


def _addr_flop(bias: Any, a: Any, b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * _prod(a) * _prod(b)


def _extra_flop_formulas() -> dict[Any, Any]:
    formulas = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu_flop,
        "mkldnn_rnn_layer": _mkldnn_rnn_layer_flop,
        "mv": _mv_flop,
        "addmv": _addmv_flop,
        "dot": _dot_flop,
        "vdot": _dot_flop,
        "addr": _addr_flop,
    }
    mapping: dict[Any, Any] = {}
    for name, formula in formulas.items():
        try:
            mapping[getattr(torch.ops.aten, name)] = formula
        except (AttributeError, RuntimeError):  # kernel absent from this PyTorch build
            continue
    return mapping


# Substrings of kernel names that do multiply-accumulates; a kernel named like this with no
# FLOP formula triggers a MacCountWarning.
_COMPUTE_NAME_PARTS = (
    "mm",
    "matmul",
    "conv",
    "linear",
    "attention",
    "rnn",
    "lstm",
    "gru",
    "einsum",
    "dot",
    "addmv",
    "addr",
    "mv",
    "quantized",
    "fbgemm",
    "mkldnn",
    "onednn",
    "transformer",
)


class _CheckedFlopCounter(FlopCounterMode):
    """FlopCounterMode with the extra CPU formulas that remembers uncounted compute kernels."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=_extra_flop_formulas())
        self.uncounted: set[str] = set()

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        if func_packet not in self.flop_registry:
            name = str(func_packet).lower()
            if any(part in name for part in _COMPUTE_NAME_PARTS):
                self.uncounted.add(str(func_packet))
        return super()._count_flops(func_packet, out, args, kwargs)


@contextlib.contextmanager
def _mha_fastpath_disabled() -> Iterator[None]:
    backend = getattr(torch.backends, "mha", None)
    if backend is None or not hasattr(backend, "set_fastpath_enabled"):
        yield
        return
    previous = backend.get_fastpath_enabled()
    backend.set_fastpath_enabled(False)
    try:
        yield
    finally:
        backend.set_fastpath_enabled(previous)


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one batch-1 inference, counted by PyTorch's FLOP counter.

    Parameters
    ----------
    model : torch.nn.Module
        The model; run once in eval mode under :func:`torch.inference_mode`, then restored.
    example_input : torch.Tensor
        One input with a leading batch axis of size 1.

    Returns
    -------
    int
        ``FlopCounterMode`` total FLOPs // 2 (one MAC = one multiply + one add). Bias
        additions, activations, normalisation and softmax are not MACs and are not counted.

    Warns
    -----
    MacCountWarning
        If a kernel that looks like compute (matmul, conv, attention, RNN, quantized ...) ran
        with no FLOP formula, so its MACs are missing from the count.

    Raises
    ------
    ValueError
        On an invalid model or input, or if the forward pass fails.
    """
    where = "count_macs"
    _check_model(model, where)
    _check_input(example_input, where)
    counter = _CheckedFlopCounter()
    with _inference(model), _mha_fastpath_disabled(), counter:
        _forward(model, example_input, where)
    if counter.uncounted:
        warnings.warn(
            f"{where}: kernels {sorted(counter.uncounted)} ran without a FLOP formula in "
            "torch.utils.flop_counter, so their multiply-accumulates are missing from the count.",
            MacCountWarning,
            stacklevel=2,
        )
    return int(counter.get_total_flops()) // 2


# --------------------------------------------------------------------------------------------
# Peak RAM
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: the profiler's C++ core prints start/stop lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_activation_bytes(model: nn.Module, example_input: torch.Tensor, where: str) -> int:
    """Peak of the running sum of CPU allocations/frees during one profiled forward pass."""
    _forward(model, example_input, where)  # warm-up: one-off kernel set-up is not per-inference
    with warnings.catch_warnings():
        # the profiler's own housekeeping warnings are no concern of the caller's
        warnings.filterwarnings("ignore", module=r"torch\.profiler")
        warnings.filterwarnings("ignore", module=r"torch\.autograd\.profiler")
        with _native_stderr_silenced(), profile(
            activities=[ProfilerActivity.CPU], profile_memory=True
        ) as prof:
            output = _forward(model, example_input, where)
        del output
        try:
            events = list(prof.profiler.kineto_results.events())  # type: ignore[union-attr]
        except AttributeError as error:
            raise RuntimeError(
                f"{where}: this PyTorch build does not expose the profiler's raw memory events "
                "(profile().profiler.kineto_results), so activation memory cannot be measured."
            ) from error
    memory = [
        event
        for event in events
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    ]
    memory.sort(key=lambda event: event.start_ns())  # stable: ties keep recording order
    live = 0
    peak = 0
    for event in memory:
        live += int(event.nbytes())  # positive: allocation, negative: free
        peak = max(peak, live)
    return peak


def peak_ram_bytes(model: nn.Module, example_input: torch.Tensor, *, threads: int = 1) -> int:
    """RAM one batch-1 inference needs: weights + input + peak live activation bytes.

    Parameters
    ----------
    model : torch.nn.Module
        The model; run in eval mode under :func:`torch.inference_mode`, then restored.
    example_input : torch.Tensor
        One input with a leading batch axis of size 1.
    threads : int, default 1
        ``torch.set_num_threads`` during the measurement (restored afterwards); some kernels'
        scratch space depends on it.

    Returns
    -------
    int
        :func:`theoretical_bytes` (the weights as the deployed model stores them) + the input
        tensor's bytes + the peak of the running sum of CPU allocations and frees, in event
        order, recorded by ``torch.profiler`` (``profile_memory=True``) during one forward pass
        after one unprofiled warm-up pass. Allocations include kernels' internal scratch
        buffers and the output.

    Notes
    -----
    Only memory that goes through PyTorch's CPU allocator is seen: a kernel library that
    allocates with its own ``malloc`` (or persistent caches made during the warm-up pass) is
    not, nor is the Python interpreter and the PyTorch runtime itself. Allocations made by
    other threads of the process while the profiler runs would be counted, so do not measure
    concurrently. Activations are measured at the dtype the model runs in, which for a
    fake-quantized model is float32.
    """
    where = "peak_ram_bytes"
    _check_model(model, where)
    _check_input(example_input, where)
    threads = _check_int("threads", threads, 1, where, "Use threads=1 for a single-core target.")
    weights = theoretical_bytes(model)
    input_bytes = example_input.numel() * example_input.element_size()
    with _inference(model), _num_threads(threads):
        activations = _peak_activation_bytes(model, example_input, where)
    return weights + input_bytes + activations


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------


def latency_samples_ms(
    model: nn.Module,
    example_input: torch.Tensor,
    repeats: int = 200,
    warmup: int = 20,
    threads: int = 1,
) -> np.ndarray:
    """Every timed batch-1 forward pass, in milliseconds (the samples behind :func:`latency_ms`).

    Parameters
    ----------
    model : torch.nn.Module
        The model; run in eval mode under :func:`torch.inference_mode`, then restored.
    example_input : torch.Tensor
        One input with a leading batch axis of size 1.
    repeats : int, default 200
        Timed forward passes (>= 1).
    warmup : int, default 20
        Untimed forward passes first (>= 0).
    threads : int, default 1
        ``torch.set_num_threads`` while timing; the previous value is restored afterwards.

    Returns
    -------
    np.ndarray
        ``repeats`` float64 latencies in timing order; each pass timed alone with
        :func:`time.perf_counter_ns`, with Python's garbage collector paused while timing.
    """
    where = "latency_ms"
    _check_model(model, where)
    _check_input(example_input, where)
    repeats = _check_int("repeats", repeats, 1, where, "Use e.g. repeats=200 for a stable p95.")
    warmup = _check_int("warmup", warmup, 0, where, "Use e.g. warmup=20.")
    threads = _check_int("threads", threads, 1, where, "Use threads=1 for a single-core target.")
    elapsed = np.empty(repeats, dtype=np.int64)
    gc_was_enabled = gc.isenabled()
    with _inference(model), _num_threads(threads):
        for _ in range(warmup):
            _forward(model, example_input, where)
        gc.disable()
        try:
            for i in range(repeats):
                start = time.perf_counter_ns()
                _forward(model, example_input, where)
                elapsed[i] = time.perf_counter_ns() - start
        finally:
            if gc_was_enabled:
                gc.enable()
    return elapsed / 1e6


def latency_ms(
    model: nn.Module,
    example_input: torch.Tensor,
    repeats: int = 200,
    warmup: int = 20,
    threads: int = 1,
) -> tuple[float, float]:
    """Median and 95th-percentile latency of a batch-1 forward pass, in milliseconds.

    Parameters
    ----------
    model, example_input, repeats, warmup, threads
        As for :func:`latency_samples_ms`, which times the passes.

    Returns
    -------
    tuple of float
        ``(p50_ms, p95_ms)`` of the samples (linear interpolation).
    """
    samples = latency_samples_ms(model, example_input, repeats, warmup, threads)
    p50, p95 = np.percentile(samples, [50.0, 95.0])
    return float(p50), float(p95)


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------

_INT_FIELDS = (
    "parameters",
    "nonzero_parameters",
    "serialized_bytes",
    "theoretical_bytes",
    "macs",
    "peak_ram_bytes",
)


def _clean_metrics(metrics: Any, where: str) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"{where}: metrics must be a dict of metric name -> number, "
            f"got {type(metrics).__name__}."
        )
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: metric names must be non-empty strings, got {name!r}.")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"{where}: metric '{name}' is {value!r}; metrics must be real numbers."
            )
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(
                f"{where}: metric '{name}' is {number}; metrics must be finite (a NaN or infinite "
                "score breaks JSON and comparison -- fix or drop the metric before recording)."
            )
        clean[name] = number
    return clean


@dataclass(frozen=True)
class Measurement:
    """What a model costs and scores at one compression stage.

    Attributes
    ----------
    parameters : int
        All parameters (shared ones once).
    nonzero_parameters : int
        Parameters that are not exactly zero.
    serialized_bytes : int
        Bytes of ``torch.save(model.state_dict())``: a naive float checkpoint on disk.
    theoretical_bytes : int
        Bytes of the stored tensors at their stored bit widths (see :func:`theoretical_bytes`).
    macs : int
        Multiply-accumulates of one batch-1 inference.
    peak_ram_bytes : int
        Weights + input + peak live activation bytes of one batch-1 inference.
    latency_ms_p50, latency_ms_p95 : float
        Median and 95th-percentile batch-1 latency in milliseconds.
    threads : int
        ``torch.set_num_threads`` the latency was measured with.
    metrics : dict of str to float
        Task metrics (e.g. ``{"tss": 0.81}``), finite numbers.
    stage : str
        Compression stage label, e.g. ``"base"``, ``"pruned"``, ``"int8"``.
    """

    parameters: int
    nonzero_parameters: int
    serialized_bytes: int
    theoretical_bytes: int
    macs: int
    peak_ram_bytes: int
    latency_ms_p50: float
    latency_ms_p95: float
    threads: int
    metrics: dict[str, float] = field(default_factory=dict)
    stage: str = "base"

    def __post_init__(self) -> None:
        where = "Measurement"
        for name in _INT_FIELDS:
            value = _check_int(name, getattr(self, name), 0, where, "")
            object.__setattr__(self, name, value)
        object.__setattr__(
            self, "threads", _check_int("threads", self.threads, 1, where, "")
        )
        if self.nonzero_parameters > self.parameters:
            raise ValueError(
                f"{where}: nonzero_parameters ({self.nonzero_parameters}) exceeds parameters "
                f"({self.parameters})."
            )
        for name in ("latency_ms_p50", "latency_ms_p95"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(
                    f"{where}: {name} must be a number of milliseconds, got {value!r}."
                )
            number = float(value)
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{where}: {name} must be finite and >= 0, got {number}.")
            object.__setattr__(self, name, number)
        if self.latency_ms_p95 < self.latency_ms_p50:
            raise ValueError(
                f"{where}: latency_ms_p95 ({self.latency_ms_p95}) is below latency_ms_p50 "
                f"({self.latency_ms_p50}); a 95th percentile cannot be below the median."
            )
        if not isinstance(self.stage, str) or not self.stage:
            raise ValueError(
                f"{where}: stage must be a non-empty string label, got {self.stage!r}."
            )
        object.__setattr__(self, "metrics", _clean_metrics(self.metrics, where))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of every field (JSON-ready); :meth:`from_dict` inverts it."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["metrics"] = dict(self.metrics)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Rebuild a measurement from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If a field is missing, unknown or invalid.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"Measurement.from_dict: expected a dict, got {type(data).__name__}.")
        expected = {f.name for f in fields(cls)}
        missing = sorted(expected - set(data))
        unknown = sorted(set(data) - expected)
        if missing or unknown:
            raise ValueError(
                f"Measurement.from_dict: missing fields {missing}, unknown fields {unknown}; "
                f"a measurement has exactly {sorted(expected)}."
            )
        return cls(**dict(data))

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON text of :meth:`to_dict` (strict JSON: no NaN); :meth:`from_json` inverts it."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        """Rebuild a measurement from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    def summary_row(self) -> dict[str, Any]:
        """Flat dict for tables: sizes in kB (1 kB = 1000 bytes), latencies in ms.

        Metrics follow under their own names (prefixed ``metric:`` only where a name would
        clash with a fixed column).
        """
        sparsity = 0.0
        if self.parameters:
            sparsity = 100.0 * (1.0 - self.nonzero_parameters / self.parameters)
        row: dict[str, Any] = {
            "stage": self.stage,
            "params": self.parameters,
            "nonzero": self.nonzero_parameters,
            "sparsity_%": round(sparsity, 2),
            "serialized_kB": round(self.serialized_bytes / _KILO, 3),
            "theoretical_kB": round(self.theoretical_bytes / _KILO, 3),
            "MACs": self.macs,
            "peak_RAM_kB": round(self.peak_ram_bytes / _KILO, 3),
            "p50_ms": round(self.latency_ms_p50, 4),
            "p95_ms": round(self.latency_ms_p95, 4),
            "threads": self.threads,
        }
        fixed = set(row)
        for name, value in self.metrics.items():
            row[f"metric:{name}" if name in fixed else name] = value
        return row


def measure(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    metrics: Mapping[str, float] | None = None,
    stage: str = "base",
    repeats: int = 200,
    warmup: int = 20,
    threads: int = 1,
) -> Measurement:
    """Measure a model at one compression stage.

    Parameters
    ----------
    model : torch.nn.Module
        The model, on the CPU. It is not modified: it runs in eval mode under
        :func:`torch.inference_mode`, and every submodule's train/eval flag is restored after.
    example_input : torch.Tensor
        ONE input with a leading batch axis of size 1 (e.g. ``x[:1]``).
    metrics : dict of str to float, optional
        Task metrics to record alongside (finite numbers).
    stage : str, default "base"
        Label of the compression stage.
    repeats : int, default 200
        Timed forward passes for the latency percentiles (>= 1).
    warmup : int, default 20
        Untimed forward passes before timing (>= 0).
    threads : int, default 1
        ``torch.set_num_threads`` while timing and profiling memory; restored afterwards.

    Returns
    -------
    Measurement
        See the module docstring for how each quantity is measured.

    Raises
    ------
    ValueError
        If an argument is invalid, or if the model's forward pass fails on ``example_input``
        (the message gives the input's shape and the error).
    """
    where = "measure"
    _check_model(model, where)
    _check_input(example_input, where)
    clean_metrics = _clean_metrics(metrics, where)
    if not isinstance(stage, str) or not stage:
        raise ValueError(f"{where}: stage must be a non-empty string label, got {stage!r}.")
    repeats = _check_int("repeats", repeats, 1, where, "Use e.g. repeats=200 for a stable p95.")
    warmup = _check_int("warmup", warmup, 0, where, "Use e.g. warmup=20.")
    threads = _check_int("threads", threads, 1, where, "Use threads=1 for a single-core target.")
    with _inference(model):
        _forward(model, example_input, where)  # fail fast, before anything is counted or timed
    total, nonzero = count_parameters(model)
    p50, p95 = latency_ms(model, example_input, repeats, warmup, threads)
    return Measurement(
        parameters=total,
        nonzero_parameters=nonzero,
        serialized_bytes=serialized_bytes(model),
        theoretical_bytes=theoretical_bytes(model),
        macs=count_macs(model, example_input),
        peak_ram_bytes=peak_ram_bytes(model, example_input, threads=threads),
        latency_ms_p50=p50,
        latency_ms_p95=p95,
        threads=threads,
        metrics=clean_metrics,
        stage=stage,
    )
