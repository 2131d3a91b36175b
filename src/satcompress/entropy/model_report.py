"""What Huffman coding achieves on a PyTorch model's weights, layer by layer, against entropy.

For every Linear and convolution whose weight is a stream of a few discrete symbols, this
reports the symbol count, the empirical Shannon entropy, the bytes of a canonical Huffman code
(table included), of zero run lengths + Huffman (Deep Compression's sparse storage; only for
layers with zeros) and of a fixed-width code, next to the float32 bytes. The symbols of a layer
are, in order of preference:

* its cluster indices, for a layer clustered by :mod:`satcompress.cluster` (the codebook is
  counted at 32 bits per centroid; the zero symbol is the zero cluster's index);
* its stored integers, for a layer exposing ``integer_weight()`` (the fake-quantized layers
  of :mod:`satcompress.quantize`; their scales are not counted here: they are stored as
  declared in ``stored_bits`` either way);
* otherwise the index of each weight among the layer's distinct values, when there are at most
  :data:`MAX_DISTINCT_VALUES` of them (those values are counted as a float32 codebook).

Other layers (dense float weights) are not entropy-coded and are left out of the report.
This module imports torch; the coding itself (:mod:`satcompress.entropy`) does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from satcompress.cluster import CODEBOOK_BUFFER, cluster_indices
from satcompress.entropy.huffman import huffman_decode, huffman_encode, shannon_entropy_bits
from satcompress.entropy.runlength import decode_zero_runs, encode_zero_runs
from satcompress.prune import prunable_weights

__all__ = ["MAX_DISTINCT_VALUES", "LayerCoding", "weight_symbols", "entropy_report",
           "report_totals"]

MAX_DISTINCT_VALUES = 256
"""A weight with more distinct values than this is treated as dense floats, not symbols."""

_FLOAT_BYTES = 4


@dataclass(frozen=True)
class LayerCoding:
    """How one layer's weight symbols code.

    Attributes
    ----------
    layer : str
        Module name.
    source : str
        Where the symbols come from: "cluster indices", "quantized integers" or "distinct values".
    n_symbols : int
        Symbols (= weights) coded.
    alphabet : int
        Distinct symbols present.
    entropy_bits_per_symbol : float
        Empirical Shannon entropy ``H``.
    entropy_bytes : float
        ``n_symbols * H / 8``: the limit of any symbol-by-symbol code.
    huffman_bytes : int
        Canonical Huffman stream, header and code table included.
    huffman_bits_per_symbol : float
        Average code length of that stream (bitstream only).
    zero_run_bytes : int or None
        Zero run lengths + Huffman (both streams and tables); None for a layer without zeros.
    fixed_width_bytes : int
        ``ceil(n_symbols * ceil(log2 alphabet) / 8)``: indices at a fixed width.
    codebook_bytes : int
        Float32 codebook stored beside the symbols (0 for quantized integers).
    raw_bytes : int
        The weight as float32.
    """

    layer: str
    source: str
    n_symbols: int
    alphabet: int
    entropy_bits_per_symbol: float
    entropy_bytes: float
    huffman_bytes: int
    huffman_bits_per_symbol: float
    zero_run_bytes: int | None
    fixed_width_bytes: int
    codebook_bytes: int
    raw_bytes: int

    @property
    def coded_bytes(self) -> int:
        """Bytes of the better of the two codings, plus the codebook."""
        options = [self.huffman_bytes] + ([self.zero_run_bytes] if self.zero_run_bytes else [])
        return min(options) + self.codebook_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "coded_bytes": self.coded_bytes}


def weight_symbols(layer: nn.Module) -> tuple[np.ndarray, int, str, int] | None:
    """``(symbols, zero_symbol, source, codebook_bytes)`` of a layer's weight, or None.

    See the module docstring for where symbols come from; ``zero_symbol`` is the symbol of
    the value 0 (-1 when 0 does not occur).
    """
    if getattr(layer, CODEBOOK_BUFFER, None) is not None:
        codebook = getattr(layer, CODEBOOK_BUFFER).detach().numpy()
        zero = np.flatnonzero(codebook == 0)
        return (cluster_indices(layer), int(zero[0]) if len(zero) else -1, "cluster indices",
                codebook.size * _FLOAT_BYTES)
    if callable(getattr(layer, "integer_weight", None)):
        return layer.integer_weight().detach().numpy().astype(np.int64), 0, "quantized integers", 0
    values, symbols = np.unique(layer.weight.detach().numpy(), return_inverse=True)
    if len(values) > MAX_DISTINCT_VALUES:
        return None
    zero = np.flatnonzero(values == 0)
    return (symbols.astype(np.int64), int(zero[0]) if len(zero) else -1, "distinct values",
            values.size * _FLOAT_BYTES)


def entropy_report(model: nn.Module, max_run: int = 255, verify: bool = True) -> list[LayerCoding]:
    """Per-layer Huffman coding of ``model``'s weight symbols against their entropy.

    Parameters
    ----------
    model : nn.Module
        E.g. the output of stage ``weight_cluster`` or of a quantization stage.
    max_run : int
        Longest zero run one run-length entry records (see
        :func:`satcompress.entropy.run_length_encode_zeros`).
    verify : bool
        Decode every stream and check it reproduces the symbols exactly (raises
        ``RuntimeError`` otherwise).

    Returns
    -------
    list of LayerCoding
        One per layer with symbol weights, in model order (see the module docstring).
    """
    report = []
    for weight_name, weight in prunable_weights(model).items():
        layer_name = weight_name.rpartition(".")[0]
        found = weight_symbols(model.get_submodule(layer_name))
        if found is None:
            continue
        symbols, zero, source, codebook_bytes = found
        flat = symbols.reshape(-1)
        stream = huffman_encode(flat)
        runs = encode_zero_runs(flat, zero, max_run) if zero >= 0 and (flat == zero).any() else None
        if verify and not (
            np.array_equal(huffman_decode(stream), flat)
            and (runs is None or np.array_equal(decode_zero_runs(runs), flat))
        ):
            raise RuntimeError(f"Huffman coding of {layer_name} did not round-trip; please report.")
        alphabet = len(np.unique(flat))
        entropy = shannon_entropy_bits(flat)
        report.append(LayerCoding(
            layer=layer_name,
            source=source,
            n_symbols=int(flat.size),
            alphabet=alphabet,
            entropy_bits_per_symbol=entropy,
            entropy_bytes=flat.size * entropy / 8,
            huffman_bytes=stream.nbytes,
            huffman_bits_per_symbol=stream.bits_per_symbol,
            zero_run_bytes=None if runs is None else runs.nbytes,
            fixed_width_bytes=math.ceil(flat.size * max(1, math.ceil(math.log2(alphabet))) / 8),
            codebook_bytes=codebook_bytes,
            raw_bytes=int(weight.numel()) * _FLOAT_BYTES,
        ))
    return report


def report_totals(report: list[LayerCoding]) -> dict[str, float]:
    """Sums over layers: symbols, entropy, Huffman, best coding (+ codebooks), fixed width, raw."""
    return {
        "layers": len(report),
        "n_symbols": sum(layer.n_symbols for layer in report),
        "entropy_bytes": sum(layer.entropy_bytes for layer in report),
        "huffman_bytes": sum(layer.huffman_bytes for layer in report),
        "coded_bytes": sum(layer.coded_bytes for layer in report),
        "fixed_width_bytes": sum(layer.fixed_width_bytes for layer in report),
        "codebook_bytes": sum(layer.codebook_bytes for layer in report),
        "raw_bytes": sum(layer.raw_bytes for layer in report),
    }
