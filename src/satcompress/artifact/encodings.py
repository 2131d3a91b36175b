"""Lossless tensor encodings of the flight artifact (first version: raw little-endian bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from satcompress.artifact.errors import ArtifactError

__all__ = ["SUPPORTED_DTYPES", "EncodedTensor", "encode_tensor", "decode_tensor"]

SUPPORTED_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                    "float16", "float32", "float64")
"""Dtypes a tensor block may have (stored little-endian)."""


@dataclass(frozen=True)
class EncodedTensor:
    """A tensor's stored bytes and the JSON spec (encoding name and parameters) decoding them."""

    data: bytes
    spec: dict[str, Any]


def encode_tensor(array: np.ndarray, *, entropy_coding: bool = True) -> EncodedTensor:
    """Encode ``array`` losslessly with the smallest encoding found."""
    del entropy_coding
    return EncodedTensor(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes(),
                         {"e": "raw"})


def decode_tensor(data: bytes, spec: dict[str, Any], dtype: np.dtype,
                  shape: tuple[int, ...]) -> np.ndarray:
    """Decode one block back to the exact array it was encoded from."""
    count = int(np.prod(shape, dtype=np.int64))
    little = dtype.newbyteorder("<")
    if len(data) != count * little.itemsize:
        raise ArtifactError(f"holds {len(data)} bytes but its shape {shape} needs "
                            f"{count * little.itemsize}")
    return np.frombuffer(data, dtype=little).astype(dtype).reshape(shape)
