"""One way to run many fuses: a `Work` (what each worker holds, a fuser, and does with one
item) run by an `Executor` over a stream of items, whose outcomes (`Done`) come back as
each finishes or in the items' order. Executors differ only in where the workers live:
processes on this machine (executor_processes.py), threads of this process
(executor_threads.py) or Ray actors (executor_ray.py); executor_registry.py names them.

They share one scheduler (`schedule`), over the small `Pool` each one starts:

- as completed (`in_order=False`): any worker with room takes the next item; for items
  that do not depend on one another (the sets of a batch);
- in order (`in_order=True`): item i goes to worker i mod N, so that each worker sees its
  items in their order (a warm start carries from one to the next), and outcomes come
  back in the items' order, at most `window` items out at a time (memory stays bounded
  on a long video).

Items are taken from the stream only when a worker has room: a generator that reads its
items (a batch's sets, a video's frames) reads each one as late as it can.
"""
from __future__ import annotations

import abc
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Generator, Iterable, Protocol

from semfuse_rt.errors import SemfuseError

__all__ = ["Done", "Handler", "Work", "Pool", "Executor", "RaySettings", "schedule", "PINNED_WORKER_STOPPED"]

PINNED_WORKER_STOPPED = "not fused: the worker it was given to had stopped"


@dataclass(frozen=True)
class Done:
    """One item's outcome: `result`, or where the executor could not run it (its worker
    stopped, none was left, the executor failed on it) `failure`, one line as the item's
    own reason, and `cause`, the one-line error under it (the same where there is none)."""

    index: int  # the item's place in the stream
    item: Any
    result: Any = None
    failure: str | None = None
    cause: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def reason(self) -> str | None:
        return self.cause or self.failure


class Handler(Protocol):
    """What a worker holds for its life: set up by `ready` (a failure shows before any item),
    then `run` once per item, then `close`."""

    def ready(self) -> object: ...

    def run(self, item: Any) -> Any: ...

    def close(self) -> None: ...


class Work(Protocol):
    """What every worker of a run does. `start` runs where the worker lives (a process, a Ray
    actor: there `self` arrives pickled; this process, for threads); `slot` is the worker's
    number, `threads` the CPU threads it may use (None: as the process has them)."""

    @property
    def name(self) -> str:
        """Shown in the names of threads and processes."""

    def start(self, slot: int, threads: int | None) -> Handler: ...


@dataclass(frozen=True)
class RaySettings:
    """Where and how Ray actors run (the ray executor's own settings): the cluster at
    `address` or a local instance; `cpus_per_actor` (and its threads) defaults, locally, to
    the cores shared out among the actors, on a cluster to 1; `connect_timeout_s` as in
    ray_session; `ready_timeout_s` for the actors to be placed and set up."""

    address: str | None = None
    num_gpus_per_actor: float = 0.0
    cpus_per_actor: int | None = None
    connect_timeout_s: float | None = None
    ready_timeout_s: float | None = 600

    def __post_init__(self) -> None:
        if self.cpus_per_actor is not None and self.cpus_per_actor < 1:
            raise SemfuseError(f"an actor needs 1 CPU or more, got {self.cpus_per_actor}")


class Pool(Protocol):
    """The workers an executor started, as the scheduler sees them."""

    def size(self) -> int:
        """Workers started (the number that pinned items are spread over)."""

    def free(self, per_worker: int) -> list[int]:
        """Each worker that takes an item now, once for each item it has room for."""

    def submit(self, slot: int, index: int, item: object) -> bool:
        """Gives the item to worker `slot`; False where it has stopped and did not take it."""

    def wait(self) -> list[Done]:
        """Blocks until something happens; the items that finished (maybe none: a worker
        became ready, or stopped holding nothing)."""

    def alive(self) -> bool:
        """Whether any worker is running or still starting."""

    def no_more(self) -> None:
        """No item will follow: idle workers may close now."""

    def leftover(self) -> str:
        """The reason of items no worker was left to run; SemfuseError where none ever could."""


def schedule(pool: Pool, items: Iterable, *, in_order: bool, per_worker: int = 1,
             window: int | None = None) -> Generator[Done, None, None]:
    """The outcome of every item of `items` run on `pool`'s workers (see the module's
    docstring). `per_worker`: items out on one worker at a time, as completed; `window`:
    items out in all, in order (default `per_worker` a worker)."""
    source = enumerate(items)
    held: deque[tuple[int, object]] = deque()  # taken, then given back by a worker that stopped
    exhausted = False
    out = 0  # given out and not yet yielded
    finished: dict[int, Done] = {}  # in order: done, waiting for an earlier item
    next_index = 0

    def take() -> tuple[int, object] | None:
        nonlocal exhausted
        if held:
            return held.popleft()
        if exhausted:
            return None
        taken = next(source, None)
        if taken is None:
            exhausted = True
            pool.no_more()
        return taken

    while True:
        if in_order:
            limit = window or per_worker * pool.size()
            while out < limit and (taken := take()) is not None:
                index, item = taken
                out += 1
                if not pool.submit(index % pool.size(), index, item):
                    finished[index] = Done(index, item, failure=PINNED_WORKER_STOPPED)
        else:
            for slot in pool.free(per_worker):
                if (taken := take()) is None:
                    break
                if pool.submit(slot, *taken):
                    out += 1
                else:
                    held.appendleft(taken)
        if in_order:
            while next_index in finished:
                out -= 1
                yield finished.pop(next_index)
                next_index += 1
        if out == 0 and ((exhausted and not held) or not pool.alive()):
            break
        for done in pool.wait():
            if in_order:
                finished[done.index] = done
                while next_index in finished:
                    out -= 1
                    yield finished.pop(next_index)
                    next_index += 1
            else:
                out -= 1
                yield done
    rest = list(held) + ([] if exhausted else list(source))
    if rest:
        reason = pool.leftover()
        for index, item in sorted(rest, key=lambda pair: pair[0]):
            yield Done(index, item, failure=reason)


class Executor(abc.ABC):
    """Runs a `Work` on `workers` workers. `in_this_process`: its workers share this
    process's memory, so a Work may hand them objects already open here (a video's fusers);
    `sees_local_files`: they read and write this machine's files (a Ray cluster's nodes need
    not)."""

    name: ClassVar[str]
    title: ClassVar[str]  # where its workers are, for messages: "failed on Ray"
    in_this_process: ClassVar[bool]
    sees_local_files: ClassVar[bool]

    def __init__(self, workers: int, ray: RaySettings | None = None):
        if ray is not None:
            raise SemfuseError(f"Ray's settings apply to the ray executor, not to {self.name}")
        self.workers = workers

    @classmethod
    def check_available(cls) -> None:
        """A one-line SemfuseError, before any work, where this executor cannot run here."""

    @classmethod
    @abc.abstractmethod
    def check_workers(cls, workers: int) -> int:
        """The number of workers as it will run, or a one-line SemfuseError."""

    @abc.abstractmethod
    def run(self, work: Work, items: Iterable, *, in_order: bool) -> Generator[Done, None, None]:
        """The outcome of every item; a generator, which callers close (contextlib.closing)
        so that the workers stop as soon as they stop taking outcomes."""
