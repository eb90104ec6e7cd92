"""A rich progress bar for the optimisation loop, shared by the commands."""
from __future__ import annotations

from contextlib import contextmanager


def _no_progress(step: int, total: int, loss: float) -> None:
    """The callback where no bar is shown (-q)."""


@contextmanager
def step_progress(description: str, enabled: bool = True):
    """Yields a callback(step, total, loss) that advances a bar showing the loss."""
    if not enabled:  # without importing rich, which a one-shot -q fuse would otherwise wait for
        yield _no_progress
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from semfuse_rt.engine.io import progress_bar

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
    with progress_bar(*columns, enabled=enabled) as bar:
        task = bar.add_task(description, total=None, loss="-")

        def advance(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.4g}")

        yield advance
