"""Progress of long steps and worker counts, torch-free (used by the flight-path preprocessing).

:class:`Progress` shows a live line (``\\r``-rewritten) when its stream is a terminal and
writes one plain, time-stamped log line every ``interval_s`` seconds (and at the end) when it
is not, so a job whose output goes to a file or a CI log is never silent for minutes.
:func:`default_jobs` / :func:`set_default_jobs` hold the worker count that ``--jobs`` sets, and
:func:`default_progress` / :func:`set_default_progress` whether steps report by default (the
command line turns it on, so distillation and fine-tuning stages report too).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

__all__ = [
    "JOBS_VARIABLE",
    "Progress",
    "default_jobs",
    "default_progress",
    "set_default_jobs",
    "set_default_progress",
]

JOBS_VARIABLE = "SATCOMPRESS_JOBS"
"""Environment variable giving the default number of worker processes (else every core)."""

_JOBS: list[int | None] = [None]
_PROGRESS = [False]


def default_progress() -> bool:
    """Whether steps not told otherwise report progress (the command line turns it on)."""
    return _PROGRESS[0]


def set_default_progress(enabled: bool) -> None:
    """Turn progress reports on or off for every step not told otherwise (training,
    distillation, fine-tuning)."""
    _PROGRESS[0] = bool(enabled)


def default_jobs() -> int:
    """Workers for parallel steps: :func:`set_default_jobs`, else ``$SATCOMPRESS_JOBS``, else
    the cores this process may use."""
    if _JOBS[0] is not None:
        return _JOBS[0]
    configured = os.environ.get(JOBS_VARIABLE)
    if configured:
        jobs = int(configured)
        if jobs < 1:
            raise ValueError(f"{JOBS_VARIABLE} must be >= 1, got {configured!r}.")
        return jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


def set_default_jobs(jobs: int | None) -> None:
    """Set (or, with None, unset) the process-wide worker count (``--jobs``)."""
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}.")
    _JOBS[0] = jobs


class Progress:
    """Counts the done items of a long step and reports them.

    Use as a context manager; :meth:`advance` after each item or batch. On a terminal the
    line ``description done/total (pct) elapsed`` is rewritten at most ``refresh_s`` apart;
    elsewhere a line ``[HH:MM:SS] description: done/total (pct), elapsed, eta`` is written
    every ``interval_s`` seconds and once at the end. ``enabled=False`` reports nothing.
    """

    def __init__(
        self,
        description: str,
        total: int,
        stream: TextIO | None = None,
        interval_s: float = 10.0,
        refresh_s: float = 0.2,
        enabled: bool = True,
    ) -> None:
        self.description = description
        self.total = max(0, int(total))
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = refresh_s if self.interactive else interval_s
        self._started = self._last = 0.0
        self._reported = -1
        self.extra = ""

    def __enter__(self) -> Progress:
        self._started = self._last = time.monotonic()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.done != self._reported or self.interactive:
            self._report(final=True)

    def advance(self, count: int = 1, extra: str = "") -> None:
        """Mark ``count`` more items done (``extra``: a short status shown after the count)."""
        self.done += count
        self.extra = extra or self.extra
        if time.monotonic() - self._last >= self.interval_s:
            self._report(final=False)

    def _line(self, elapsed: float) -> str:
        fraction = self.done / self.total if self.total else 1.0
        eta = elapsed * (1 - fraction) / fraction if 0 < fraction < 1 else 0.0
        extra = f" {self.extra}" if self.extra else ""
        return (f"{self.description}: {self.done:,}/{self.total:,} ({100 * fraction:.0f}%){extra}, "
                f"{elapsed:.0f}s elapsed" + (f", ~{eta:.0f}s left" if eta else ""))

    def _report(self, final: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        self._last, self._reported = now, self.done
        line = self._line(now - self._started)
        if self.interactive:
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
        self.stream.flush()
