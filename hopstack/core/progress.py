"""Progress of a command's long steps on a console (``hopstack demo``, ``eval`` and ``compare``, on stderr).

A command names its steps (``status(message)``: indexing, running the variants, scoring) and the steps report
how their parts advance (``progress(name, done, total)``: an index build's chunks, a node's questions). On a
terminal the current step and part are live lines (a spinner and the step's time; the part's bar), cleared when
the step ends, which leaves one line per step with its time: no bar stays behind. Where nothing can redraw (stderr
piped to a file or a program), each step is printed as it starts, and a part when it finishes and every
``interval`` seconds while it runs.
"""

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

Status = Callable[[str], None]
"""The callback a long task calls with the name of each step as it starts."""


class _Only(ProgressColumn):
    """A column drawn on the parts' lines only (``parts``), or on the steps' lines only; a step has no total."""

    def __init__(self, column: ProgressColumn, parts: bool):
        super().__init__()
        self.column, self.parts = column, parts

    def render(self, task: Task) -> RenderableType:
        return self.column.render(task) if (task.total is not None) == self.parts else Text("")


class StepProgress:
    """Steps and their parts on ``console``, used as a context manager: ``status`` and ``progress`` are the
    callbacks that :func:`hopstack.experiments.compare.compare` and the runner take."""

    def __init__(self, console: Console, interval: float = 30.0):
        self.console = console
        self.interval = interval
        self.live = console.is_interactive
        self._bar = Progress(
            _Only(SpinnerColumn(), parts=False),
            # a long step leaves room for the bars: the live line shortens it, the line left when it ends does not
            TextColumn(
                "{task.description}",
                markup=False,
                table_column=Column(no_wrap=True, overflow="ellipsis", max_width=max(24, console.width // 2)),
            ),
            _Only(BarColumn(), parts=True),
            _Only(MofNCompleteColumn(), parts=True),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not self.live,
        )
        self._step: tuple[str, float, TaskID] | None = None  # message, start, task
        self._part: tuple[str, TaskID] | None = None
        self._printed = 0.0  # when the part's progress was last printed (without a terminal)

    def __enter__(self) -> "StepProgress":
        self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._end_step(failed=kind is not None)
        self._bar.stop()

    def status(self, message: str) -> None:
        """End the current step and start the one ``message`` names."""
        self._end_step(failed=False)
        self._step = (message, time.perf_counter(), self._bar.add_task(message, total=None))
        if not self.live:
            self.console.print(message, markup=False, highlight=False)

    def progress(self, name: str, done: int, total: int) -> None:
        """Part ``name`` of the current step has done ``done`` of ``total`` items; a new name replaces the part
        shown before."""
        now = time.perf_counter()
        if self._part is None or self._part[0] != name:
            self._remove_part()
            self._part = (name, self._bar.add_task(f"  {name}", total=total))
            self._printed = now
        self._bar.update(self._part[1], completed=done, total=total)
        if not self.live and (done >= total or now - self._printed >= self.interval):
            self.console.print(f"  {name} {done}/{total}", markup=False, highlight=False)
            self._printed = now

    def _remove_part(self) -> None:
        if self._part is not None:
            self._bar.remove_task(self._part[1])
            self._part = None

    def _end_step(self, failed: bool) -> None:
        """On a terminal, print the step with its time (marked ✗ when it failed; the live lines are drawn once more
        under it, as the step ended); then clear the step's live lines."""
        if self._step is not None:
            message, started, task = self._step
            if self.live:
                self._bar.refresh()
                mark = "✗" if failed else "✓"
                line = f"{mark} {message} ({time.perf_counter() - started:.1f} s)"
                self.console.print(line, markup=False, highlight=False, style="red" if failed else None)
            self._bar.remove_task(task)
            self._step = None
        self._remove_part()
