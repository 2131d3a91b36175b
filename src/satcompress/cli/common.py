"""What every ``satcompress`` command shares: the console, the one-line failure, task checks.

Each command lives in its own module of :mod:`satcompress.cli` as a plain function and is
registered on the Typer app in :mod:`satcompress.cli.app`.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from satcompress.tasks.registry import get_task, task_names

__all__ = ["TASK_HELP", "check_task", "console", "fail"]

console = Console()
TASK_HELP = f"Reference task: {' | '.join(task_names())}."


def fail(message: str) -> NoReturn:
    """Print ``message`` as one clear error line and exit with status 2 (no traceback)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


def check_task(name: str) -> None:
    """Fail with the list of known tasks unless ``name`` is one."""
    try:
        get_task(name)
    except ValueError as error:
        fail(str(error))
