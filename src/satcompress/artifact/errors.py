"""The one error every artifact load failure raises, and the fix its messages suggest."""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["REEXPORT", "ArtifactError", "shown"]

REEXPORT = "re-export the artifact (satcompress compress) or re-transmit the file"
"""How to fix a damaged artifact: the end of most :class:`ArtifactError` messages."""

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80


def shown(value: Any) -> str:
    """``repr(value)`` cut to a readable length: a damaged or crafted file can hold huge values."""
    return _REPR.repr(value)


class ArtifactError(ValueError):
    """A flight artifact cannot be loaded: its message names the bad part or block and the fix.

    Raised for truncated, corrupted, foreign or newer-format files, for files beyond the
    loader's :class:`~satcompress.artifact.limits.LoadLimits`, and (as its subclass
    :class:`satcompress.runtime.GraphError`) for graphs the runtime cannot load; a subclass of
    :class:`ValueError`, so callers catching that keep working.
    """
