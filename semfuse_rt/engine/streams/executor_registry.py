"""The executors by name: where the workers of a run of many fuses live (executors.py)."""
from __future__ import annotations

from semfuse_rt.engine.streams.executor_processes import ProcessesExecutor
from semfuse_rt.engine.streams.executor_ray import RayExecutor
from semfuse_rt.engine.streams.executor_threads import ThreadsExecutor
from semfuse_rt.engine.streams.executors import Executor
from semfuse_rt.errors import SemfuseError

__all__ = ["EXECUTORS", "executor_named"]

EXECUTORS: dict[str, type[Executor]] = {each.name: each for each in (ProcessesExecutor, ThreadsExecutor, RayExecutor)}


def executor_named(name: str) -> type[Executor]:
    try:
        return EXECUTORS[name]
    except (KeyError, TypeError):
        raise SemfuseError(f"unknown executor {name!r}: use one of {', '.join(sorted(EXECUTORS))}") from None
