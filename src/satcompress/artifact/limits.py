"""What loading one artifact may cost: the loader's limits, checked before allocating.

A checksum proves a file is what its writer wrote, not that its writer meant well: a few
hundred valid bytes can declare a tensor of 10**12 elements, a header that inflates to
gigabytes, or a graph whose constant folding or activations take more memory than the flight
computer has. :class:`LoadLimits` caps every quantity a file controls; the container
(:func:`~satcompress.artifact.decode_artifact`) and the runtime (:func:`satcompress.runtime.
load`) check each cap before allocating what it guards and refuse a file beyond one with an
:class:`~satcompress.artifact.ArtifactError` naming the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from satcompress.artifact.errors import ArtifactError, shown

__all__ = ["LoadLimits"]

_MIB = 2**20


@dataclass(frozen=True)
class LoadLimits:
    """Caps on what one artifact may make its loader allocate (defaults fit a flight computer).

    The reference artifacts need a few percent of each default at most (tens of KiB of file,
    a few KiB of header, at most a few hundred nodes, under 2 MiB of activations). Raise a
    limit for a larger genuine model: ``runtime.load(path, limits=LoadLimits(max_nodes=
    20_000))``; the error refusing a file names the limit it is beyond.

    Attributes
    ----------
    max_file_bytes : int
        Size of the file (32 MiB), checked before it is read.
    max_header_bytes : int
        The header's JSON once inflated (256 KiB; parsed, JSON takes up to 26 times its
        size); it is not inflated further.
    max_decoded_bytes : int
        All tensor blocks once decoded (32 MiB), summed from their declared shapes.
    max_tensor_elements : int
        Elements of any one declared shape (2**22): a tensor block or the graph input.
    max_dims : int
        Dimensions of any one declared shape (8).
    max_nodes : int
        Nodes of the graph (4096).
    max_folded_bytes : int
        Constants the runtime computes at load from stored tensors (32 MiB; e.g. a
        dequantized weight, a positional encoding). Every node is checked before it runs,
        from its inputs' shapes.
    max_activation_bytes : int
        Activations of one batch-1 inference (32 MiB): the values alive at once during the
        load-time dry run, each node checked before it runs, and the planned buffer arena.
    """

    max_file_bytes: int = 32 * _MIB
    max_header_bytes: int = _MIB // 4
    max_decoded_bytes: int = 32 * _MIB
    max_tensor_elements: int = 2**22
    max_dims: int = 8
    max_nodes: int = 4096
    max_folded_bytes: int = 32 * _MIB
    max_activation_bytes: int = 32 * _MIB

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LoadLimits.{limit.name} must be a positive integer; got "
                                 f"{value!r}.")

    def exceeded(self, limit: str, what: str) -> ArtifactError:
        """The error for a file whose ``what`` (e.g. "Block 'w' declares 10**9 elements")
        goes beyond the limit named ``limit``."""
        return ArtifactError(
            f"{what}, beyond the loader's limit {limit}={getattr(self, limit)}: the file is "
            f"corrupted or crafted. If it is genuine, load it with a larger limit "
            f"(LoadLimits({limit}=...))."
        )

    def check_shape(self, shape: Any, what: str) -> int:
        """The element count of a declared ``shape`` (a list of non-negative integers).

        Raises
        ------
        ArtifactError
            If ``shape`` is not such a list, or has more than ``max_dims`` dimensions or more
            than ``max_tensor_elements`` elements (computed exactly, without overflow).
        """
        if not isinstance(shape, list) or not all(
                isinstance(size, int) and not isinstance(size, bool) and size >= 0
                for size in shape):
            raise ArtifactError(f"{what} has shape {shown(shape)}, not a list of non-negative "
                                "integers: the file is corrupted or crafted.")
        if len(shape) > self.max_dims:
            raise self.exceeded("max_dims", f"{what} declares {len(shape)} dimensions")
        if any(size > self.max_tensor_elements for size in shape):
            raise self.exceeded("max_tensor_elements",
                                f"{what} declares a dimension of {max(shape)} elements")
        count = math.prod(shape)
        if count > self.max_tensor_elements:
            raise self.exceeded("max_tensor_elements", f"{what} declares {count} elements")
        return count
