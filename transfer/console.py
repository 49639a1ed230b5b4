"""Terminal output: one rich console, and progress bars that show items/s and ETA.

Markup is off: paths, class names and messages are printed as they are (a name like ``foo[/x]``
is text, not a rich tag). Styling is explicit, with `Text` pieces (`styled`).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.text import Text
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=False, highlight=False, markup=False)
err_console = Console(stderr=True, highlight=False, markup=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line from plain strings and (text, style) pairs; no part is read as markup."""
    return Text.assemble(*parts)


def warn(message: str) -> None:
    err_console.print(styled(("warning:", "yellow"), " ", message), soft_wrap=True)  # one line per warning in logs


def note(message: str | None) -> None:
    """Something the user should know about their data; nothing when ``message`` is None."""
    if message:
        err_console.print(styled(("note:", "cyan"), " ", message), soft_wrap=True)


class _Rate(ProgressColumn):
    """items/s from rich's own moving speed estimate."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"-- {self.unit}/s", style="cyan")


@contextmanager
def progress_bar(total: int, description: str, unit: str = "img", enabled: bool = True) -> Iterator:
    """Yields `advance(n)`; draws nothing when disabled or when output is not a terminal."""
    show = enabled and sys.stderr.isatty()
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _Rate(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not show,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
