"""Progress bars on stderr, shown only on a terminal: piped or logged output stays clean
(a transient bar on a non-terminal still leaves a blank line before the next message)."""
from __future__ import annotations

from rich.console import Console
from rich.progress import Progress


def progress_bar(*columns, enabled: bool = True) -> Progress:
    console = Console(stderr=True)
    return Progress(*columns, console=console, transient=True, disable=not (enabled and console.is_terminal))
