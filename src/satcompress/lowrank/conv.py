"""Tucker-2 and CP decompositions of convolutions, emitted as chains of plain convolutions.

Tucker-2 (Kim et al. 2016, "Compression of Deep Convolutional Neural Networks for Fast and
Low Power Mobile Applications", ICLR): the kernel ``W`` (out x in x k...) is decomposed along
its two channel modes, ``W = G x_0 U_out x_1 U_in`` with core ``G`` (R_out x R_in x k...);
the convolution becomes a 1x1 convolution ``in -> R_in`` (weight ``U_in^T``), a convolution
``R_in -> R_out`` with the original kernel, stride, padding and dilation (weight ``G``), and a
1x1 convolution ``R_out -> out`` (weight ``U_out``) carrying the bias.

CP (Lebedev et al. 2015, "Speeding-up Convolutional Neural Networks Using Fine-tuned
CP-Decomposition", ICLR): ``W = sum_r lambda_r a_r (x) b_r (x) c1_r (x) c2_r ...``; the convolution
becomes a 1x1 convolution ``in -> R`` (weights ``b_r``), one depthwise convolution per spatial
axis along that axis only (weights ``c_d``, with that axis' stride, padding and dilation), and a
1x1 convolution ``R -> out`` (weights ``lambda_r a_r``) carrying the bias.

The maths runs in :mod:`tensorly` with its NumPy backend (``partial_tucker``: HOOI from an SVD
initialisation; ``parafac``: alternating least squares) in float64.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import tensorly
import torch
from tensorly.decomposition import parafac, partial_tucker
from torch import nn

__all__ = ["tucker2_conv", "cp_conv", "tucker2_parameters", "cp_parameters"]

_ConvNd = nn.modules.conv._ConvNd


@contextlib.contextmanager
def _tensorly_numpy() -> Iterator[None]:
    """Tensorly on its NumPy backend, its advisory warnings (e.g. an SVD rank capped to the
    matrix size during initialisation, which is expected for small modes) silenced locally."""
    with tensorly.backend_context("numpy"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="tensorly")
        yield


def _check_conv(conv: _ConvNd, where: str) -> None:
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or conv.groups != 1:
        raise ValueError(
            f"{where}: needs an nn.Conv1d/Conv2d/Conv3d with groups=1, got "
            f"{type(conv).__name__} with groups={getattr(conv, 'groups', None)}."
        )


def _pointwise(conv_class: type, in_channels: int, out_channels: int, dims: int,
               weight: np.ndarray, bias: torch.Tensor | None) -> _ConvNd:
    layer = conv_class(in_channels, out_channels, (1,) * dims, bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight).reshape(layer.weight.shape))
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def tucker2_parameters(conv: _ConvNd, ranks: tuple[int, int]) -> int:
    """Weights of the Tucker-2 chain of ``conv`` at ``(R_out, R_in)`` (bias excluded)."""
    rank_out, rank_in = ranks
    kernel = int(np.prod(conv.kernel_size))
    return conv.in_channels * rank_in + rank_in * rank_out * kernel + rank_out * conv.out_channels


def cp_parameters(conv: _ConvNd, rank: int) -> int:
    """Weights of the CP chain of ``conv`` at rank ``rank`` (bias excluded)."""
    return rank * (conv.in_channels + conv.out_channels + int(sum(conv.kernel_size)))


def tucker2_conv(conv: _ConvNd, ranks: tuple[int, int], n_iter_max: int = 100) -> nn.Sequential:
    """Tucker-2 chain (1x1 -> core -> 1x1) approximating ``conv`` at ranks ``(R_out, R_in)``.

    Exact (to float rounding) when the ranks are at least the multilinear ranks of the kernel
    along its output and input channel modes.
    """
    _check_conv(conv, "tucker2_conv")
    rank_out, rank_in = ranks
    if not (1 <= rank_out <= conv.out_channels and 1 <= rank_in <= conv.in_channels):
        raise ValueError(
            f"tucker2_conv: ranks (R_out, R_in) must be within (1..{conv.out_channels}, "
            f"1..{conv.in_channels}), got {ranks}."
        )
    kernel = conv.weight.detach().double().numpy()
    with _tensorly_numpy():
        (core, (factor_out, factor_in)), _ = partial_tucker(
            kernel, rank=[rank_out, rank_in], modes=[0, 1], init="svd", n_iter_max=n_iter_max,
            tol=1e-10,
        )
    dims = conv.weight.dim() - 2
    conv_class = type(conv)
    core_conv = conv_class(rank_in, rank_out, conv.kernel_size, stride=conv.stride,
                           padding=conv.padding, dilation=conv.dilation, bias=False,
                           padding_mode=conv.padding_mode)
    with torch.no_grad():
        core_conv.weight.copy_(torch.from_numpy(core))
    return nn.Sequential(
        _pointwise(conv_class, conv.in_channels, rank_in, dims, factor_in.T.copy(), None),
        core_conv,
        _pointwise(conv_class, rank_out, conv.out_channels, dims, factor_out, conv.bias),
    ).to(conv.weight.dtype)


def _axis_setting(value: tuple[int, ...] | str, axis: int, dims: int, neutral: int
                  ) -> tuple[int, ...] | str:
    """A per-axis conv setting that acts along ``axis`` only (``neutral`` elsewhere)."""
    if isinstance(value, str):  # "same" / "valid" padding apply per axis as they are
        return value
    setting = [neutral] * dims
    setting[axis] = value[axis]
    return tuple(setting)


def cp_conv(conv: _ConvNd, rank: int, n_iter_max: int = 200, seed: int = 0) -> nn.Sequential:
    """CP chain (1x1 -> one depthwise conv per spatial axis -> 1x1) approximating ``conv``.

    Parameters
    ----------
    conv : nn.Conv1d, nn.Conv2d or nn.Conv3d
        With ``groups == 1``.
    rank : int
        CP rank ``R`` (channels of the chain's inner layers).
    n_iter_max : int
        Alternating-least-squares iterations (tensorly ``parafac``).
    seed : int
        Seeds the decomposition when its SVD initialisation needs random completion.
    """
    _check_conv(conv, "cp_conv")
    if rank < 1:
        raise ValueError(f"cp_conv: rank must be >= 1, got {rank}.")
    kernel = conv.weight.detach().double().numpy()
    with _tensorly_numpy():
        weights, factors = parafac(kernel, rank=rank, n_iter_max=n_iter_max, init="svd",
                                   tol=1e-12, random_state=seed)
    factor_out, factor_in, *spatial = factors
    dims = conv.weight.dim() - 2
    conv_class = type(conv)
    layers: list[nn.Module] = [
        _pointwise(conv_class, conv.in_channels, rank, dims, factor_in.T.copy(), None)
    ]
    for axis, factor in enumerate(spatial):
        kernel_size = [1] * dims
        kernel_size[axis] = conv.kernel_size[axis]
        depthwise = conv_class(
            rank, rank, tuple(kernel_size), groups=rank, bias=False,
            stride=_axis_setting(conv.stride, axis, dims, 1),
            padding=_axis_setting(conv.padding, axis, dims, 0),
            dilation=_axis_setting(conv.dilation, axis, dims, 1),
            padding_mode=conv.padding_mode,
        )
        with torch.no_grad():
            depthwise.weight.copy_(torch.from_numpy(factor.T.reshape(depthwise.weight.shape)))
        layers.append(depthwise)
    layers.append(_pointwise(conv_class, rank, conv.out_channels, dims,
                             factor_out * weights[None, :], conv.bias))
    return nn.Sequential(*layers).to(conv.weight.dtype)
