"""Terminal output: one rich console, and progress bars that show items/s and ETA.

Markup is off: paths, class names and messages are printed as they are (a name like ``foo[/x]``
is text, not a rich tag). Styling is explicit, with `Text` pieces (`styled`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, ConsoleDimensions
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
from rich.text import Text

UNBOUNDED_WIDTH = 10_000  # "as wide as the content": rich needs a number


class _Console(Console):
    """Rich's console, except that output to a pipe or a file (`transfer layers > layers.txt`, a CI log) is
    not cut to a terminal's width: rich takes the width of any terminal the process has, or 80 columns,
    and cuts table cells to fit. ``COLUMNS`` still sets a width where one is wanted."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(UNBOUNDED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = _Console(stderr=False, highlight=False, markup=False)
err_console = _Console(stderr=True, highlight=False, markup=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line from plain strings and (text, style) pairs; no part is read as markup."""
    return Text.assemble(*parts)


_WARNED: set[str] = set()  # the warnings said ``once`` in this process


def warn(message: str, once: bool = False) -> None:
    """A warning on stderr; with ``once``, not again when this process has said the same words (e.g. the
    same k-NN clip in every subset of a few-shot curve)."""
    if once and message in _WARNED:
        return
    _WARNED.add(message)
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


LOG_INTERVAL_S = 30.0


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class _LogLines:
    """Progress for a log file: a line when work starts, then one at most every ``interval`` seconds, and
    one at the end (done/total, rate, ETA)."""

    def __init__(self, total: int, description: str, unit: str, interval: float) -> None:
        self.total, self.description, self.unit, self.interval = total, description, unit, interval
        self.done = 0
        self.begun = self.last = time.perf_counter()
        err_console.print(f"{description}: 0/{total:,} {unit}", soft_wrap=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last < self.interval and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.begun
        rate = self.done / elapsed if elapsed else 0.0
        eta = f", ETA {_duration((self.total - self.done) / rate)}" if rate and self.done < self.total else ""
        err_console.print(f"{self.description}: {self.done:,}/{self.total:,} {self.unit} "
                          f"({100 * self.done / max(self.total, 1):.0f}%), {rate:,.1f} {self.unit}/s, "
                          f"{_duration(elapsed)} elapsed{eta}", soft_wrap=True)


@contextmanager
def progress_bar(total: int, description: str, unit: str = "img", enabled: bool = True) -> Iterator:
    """Yields `advance(n)`: a bar on a terminal, progress lines in a log file (`_LogLines`), nothing when
    disabled."""
    if enabled and not sys.stderr.isatty():
        yield _LogLines(total, description, unit, LOG_INTERVAL_S).advance
        return
    show = enabled
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
