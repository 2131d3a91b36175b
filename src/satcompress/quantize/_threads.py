"""Hold torch's intra-op thread count while a block runs (restored afterwards)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``.

    The small matrix products of calibration and sensitivity analysis run fastest on one
    thread; on a shared machine extra threads mostly wait for each other.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
