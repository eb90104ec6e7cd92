"""The console that commands print their tables on: stdout at the terminal's width or, when
stdout is a file or a pipe, wide enough that no table is cut short or wrapped (a log has no
width to respect, and rich would otherwise assume 80 columns and end cells with an ellipsis)."""
from __future__ import annotations

from rich.console import Console

_UNLIMITED = 10_000  # columns: wider than any table the commands print


def screen() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=_UNLIMITED)
