"""Progress of long steps (demo, eval, compare): live lines on a terminal that leave one line per step and no bar,
plain lines where stderr is no terminal."""

import io
import re

import pytest
from rich.console import Console

from hopstack.core.progress import StepProgress

_CONTROL = re.compile(r"\x1b\[(\??[0-9;]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+")


def screen(written: str) -> list[str]:
    """The lines a terminal shows after ``written``: text, newlines, carriage returns, cursor up (CSI A) and line
    erasure (CSI 2K), the controls rich's live display draws and clears itself with; other controls change
    nothing visible here (colours, the cursor shown or hidden)."""
    lines, row, col = [""], 0, 0
    for match in _CONTROL.finditer(written):
        text, (argument, command) = match.group(0), match.group(1, 2)
        if command == "A":
            row = max(0, row - int(argument or 1))
        elif command == "K" and argument == "2":
            lines[row] = ""
        elif text == "\r":
            col = 0
        elif text == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif command is None:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + text + line[col + len(text) :]
            col += len(text)
    return [line.rstrip() for line in lines if line.strip()]


INDEXING = "indexing corpus.json into a folder whose path is longer than the terminal is wide, " + "x" * 40


def _steps(console: Console, interval: float = 30.0, fail: bool = False) -> None:
    with StepProgress(console, interval) as steps:
        steps.status(INDEXING)
        for done in (0, 50, 100):
            steps.progress("embedding", done, 100)
        steps.status("running 2 variant(s)")
        steps.progress("bm25", 24, 24)
        steps.progress("dense", 0, 24)  # a part that never got further
        steps.status("scoring")  # a step without parts, like the old stray "scoring 0/?" bar
        if fail:
            raise RuntimeError("scoring failed")


def test_a_terminal_keeps_one_line_per_step_and_no_bar():
    written = io.StringIO()
    _steps(Console(file=written, force_terminal=True, width=100, soft_wrap=True))
    # the bars were drawn while the steps ran, the long step shortened on its live line to leave them room
    assert "━" in written.getvalue() and "100/100" in written.getvalue()
    shown = screen(written.getvalue())
    assert [re.sub(r"\(\d+\.\d s\)$", "(t)", line) for line in shown] == [
        f"✓ {INDEXING} (t)",
        "✓ running 2 variant(s) (t)",
        "✓ scoring (t)",
    ]


def test_a_failed_step_is_marked_and_its_bars_cleared():
    written = io.StringIO()
    with pytest.raises(RuntimeError, match="scoring failed"):
        _steps(Console(file=written, force_terminal=True, width=100, soft_wrap=True), fail=True)
    shown = screen(written.getvalue())
    assert shown[:2] == [line for line in shown if line.startswith("✓")] and len(shown) == 3
    assert shown[-1].startswith("✗ scoring (")


def test_without_a_terminal_steps_print_as_they_start_and_parts_as_they_finish():
    written = io.StringIO()
    _steps(Console(file=written, force_terminal=False, width=100, soft_wrap=True))
    assert written.getvalue().splitlines() == [
        INDEXING,
        "  embedding 100/100",
        "running 2 variant(s)",
        "  bm25 24/24",
        "scoring",
    ]
    written = io.StringIO()
    _steps(Console(file=written, force_terminal=False, width=100, soft_wrap=True), interval=0.0)  # every report is due
    assert "  embedding 0/100\n  embedding 50/100\n  embedding 100/100\n" in written.getvalue()
    assert "  dense 0/24" in written.getvalue()
