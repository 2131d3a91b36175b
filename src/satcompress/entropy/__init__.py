"""Entropy coding of stored weights: canonical Huffman codes and zero run lengths.

The last stage of Deep Compression (Han, Mao & Dally 2016): the cluster indices or quantized
integers of every layer, and the run lengths of the zeros of a pruned layer, are Huffman-coded,
and the result is compared with the Shannon entropy of the symbols (the limit of any
symbol-by-symbol code). Decoding round-trips exactly.

This package is pure NumPy -- it is part of the torch-free flight path -- and is a library,
not a registered stage: stored bit widths (``stored_bits``) are integers per tensor and cannot
express a variable-length code. :mod:`satcompress.entropy.model_report` (which imports torch,
and is not imported here) reports per layer what the coding achieves on a PyTorch model.
"""

from satcompress.entropy.huffman import (
    MAX_CODE_BITS,
    EncodedStream,
    canonical_codes,
    huffman_code_lengths,
    huffman_decode,
    huffman_encode,
    shannon_entropy_bits,
)
from satcompress.entropy.runlength import (
    EncodedZeroRuns,
    ZeroRuns,
    decode_zero_runs,
    encode_zero_runs,
    run_length_decode_zeros,
    run_length_encode_zeros,
)

__all__ = [
    "MAX_CODE_BITS",
    "EncodedStream",
    "canonical_codes",
    "huffman_code_lengths",
    "huffman_decode",
    "huffman_encode",
    "shannon_entropy_bits",
    "EncodedZeroRuns",
    "ZeroRuns",
    "decode_zero_runs",
    "encode_zero_runs",
    "run_length_decode_zeros",
    "run_length_encode_zeros",
]
