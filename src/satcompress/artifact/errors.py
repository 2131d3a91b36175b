"""The one error every artifact load failure raises."""

from __future__ import annotations

__all__ = ["ArtifactError"]


class ArtifactError(ValueError):
    """A flight artifact cannot be loaded: its message names the bad part or block and the fix.

    Raised for truncated, corrupted, foreign or newer-format files; a subclass of
    :class:`ValueError`, so callers catching that keep working.
    """
