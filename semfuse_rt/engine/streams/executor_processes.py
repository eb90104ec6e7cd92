"""The processes executor: `spawn`ed worker processes on this machine (torch and fork do not
mix), each starting its Work's handler once and running one item at a time as the parent
hands them out; they split the machine's cores. One worker runs in this process, without
a process of its own.

On Ctrl-C or SIGTERM, or when the caller stops taking outcomes, the parent stops them; a
worker stopped mid-write removes its temp file (atomic writes unwind on _Stopped). A
worker that cannot set up its handler says why; a worker that dies fails the item it held.
"""
from __future__ import annotations

import multiprocessing
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Generator, Iterable

from semfuse_rt.engine.limits.workers import check_workers, cores
from semfuse_rt.engine.streams.executors import Done, Executor, Work, schedule
from semfuse_rt.engine.streams.ray_session import sigint_ignored_by_new_processes
from semfuse_rt.errors import SemfuseError

__all__ = ["ProcessesExecutor", "STOP_GRACE_SECONDS", "worker_threads", "one_line"]

STOP_GRACE_SECONDS = 10  # how long stopped workers get to remove their temp files and exit


def worker_threads(processes: int) -> int:
    """Threads for each of `processes` fusing side by side: the machine's cores shared out."""
    return max(1, cores() // processes)


def one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ProcessesExecutor(Executor):
    name = "processes"
    title = "worker processes"
    in_this_process = False
    sees_local_files = True

    @classmethod
    def check_workers(cls, workers: int) -> int:
        return check_workers(workers)

    def run(self, work: Work, items: Iterable, *, in_order: bool) -> Generator[Done, None, None]:
        if self.workers == 1:
            # Here, as one worker: no process to start, and Ctrl-C stops the item at once.
            handler = work.start(0, None)
            try:
                for index, item in enumerate(items):
                    yield Done(index, item, handler.run(item))
            finally:
                handler.close()
            return
        pool = _ProcessPool(work, self.workers)
        try:
            yield from schedule(pool, items, in_order=in_order, per_worker=1, window=2 * self.workers)
        except BaseException:
            pool.stop(wait_s=0)
            raise
        pool.stop(wait_s=STOP_GRACE_SECONDS)


class _Stopped(BaseException):
    """SIGTERM from the parent: unwinds the worker so that atomic writes remove their temp files."""


def _stop(_signum, _frame):
    raise _Stopped()


def _worker(connection, work: Work, slot: int, threads: int) -> None:
    """A worker process: one handler, then one item per message until None."""
    # Ctrl-C reaches the whole process group; the parent decides, and stops workers with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    try:
        try:
            handler = work.start(slot, threads)
            handler.ready()
        except (SemfuseError, OSError) as error:
            connection.send(("setup failed", one_line(error)))
            return
        connection.send(("ready", None))
        try:
            while (item := connection.recv()) is not None:
                connection.send(("done", handler.run(item)))
        finally:
            handler.close()
    except (_Stopped, EOFError, BrokenPipeError):
        pass  # stopped by the parent, or the parent is gone: nothing left to report to
    finally:
        # Nothing is left to unwind: a SIGTERM while the process exits would only print a
        # traceback from multiprocessing's bootstrap.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    queue: deque = field(default_factory=deque)  # (index, item) given to it, not yet sent
    current: tuple[int, object] | None = None  # sent, not yet done
    ready: bool = False
    live: bool = True  # neither stopped nor sent None


class _ProcessPool:
    def __init__(self, work: Work, count: int):
        context = multiprocessing.get_context("spawn")
        threads = worker_threads(count)
        self.workers: list[_Worker] = []
        self.setup_errors: list[str] = []
        self.ending = False
        try:
            with sigint_ignored_by_new_processes():
                for slot in range(count):
                    parent_end, child_end = context.Pipe()
                    process = context.Process(target=_worker, args=(child_end, work, slot, threads), daemon=True,
                                              name=f"semfuse-rt {work.name} worker")
                    process.start()
                    child_end.close()
                    self.workers.append(_Worker(process, parent_end))
        except BaseException:
            self.stop(wait_s=0)
            raise

    def size(self) -> int:
        return len(self.workers)

    def free(self, per_worker: int) -> list[int]:
        return [slot for slot, worker in enumerate(self.workers)
                if worker.live and worker.ready and worker.current is None and not worker.queue]

    def submit(self, slot: int, index: int, item: object) -> bool:
        worker = self.workers[slot]
        if not worker.live:
            return False
        worker.queue.append((index, item))
        if worker.ready and worker.current is None and not self._send_next(worker):
            worker.queue.pop()  # it was idle, so this item alone was queued: the caller keeps it
            return False
        return True

    def _send_next(self, worker: _Worker) -> bool:
        """Sends its next item, or None where none is left and none will follow. False where
        it has just died: the item stays queued, and its sentinel says the rest."""
        message = worker.queue[0] if worker.queue else None
        if message is None and not self.ending:
            return True
        try:
            worker.connection.send(None if message is None else message[1])
        except OSError:
            return False
        if message is None:
            worker.live = False  # it closes its handler and exits
        else:
            worker.current = worker.queue.popleft()
        return True

    def wait(self) -> list[Done]:
        live = [worker for worker in self.workers if worker.live]
        waited: list[Connection | int] = [w.connection for w in live] + [w.process.sentinel for w in live]
        by_object: dict[object, _Worker] = dict(zip(waited, live + live))  # by pipe and by sentinel
        finished: list[Done] = []
        for event in wait(waited):
            worker = by_object[event]
            if not worker.live:
                continue  # its pipe and its sentinel both fired
            kind, value = "gone", None
            if event is worker.connection:
                try:
                    kind, value = worker.connection.recv()
                except EOFError:
                    pass
            if kind == "ready":
                worker.ready = True
            elif kind == "done":
                assert worker.current is not None, "a worker reports only the item it was sent"
                index, item = worker.current
                worker.current = None
                finished.append(Done(index, item, value))
            elif kind == "setup failed":
                self.setup_errors.append(str(value))
                worker.live = False
                finished += [Done(index, item, failure=f"not fused: its worker could not set up: {value}")
                             for index, item in worker.queue]
            else:  # the process ended without a word: killed, out of memory, crashed
                worker.process.join()
                worker.live = False
                if worker.current is not None:
                    reason = f"exit status {worker.process.exitcode}"
                    finished.append(Done(*worker.current, failure=f"the worker fusing it stopped ({reason})",
                                         cause=f"the worker stopped ({reason})"))
                    worker.current = None
                finished += [Done(index, item, failure="not fused: its worker had stopped")
                             for index, item in worker.queue]
            if worker.live and worker.ready and worker.current is None:
                self._send_next(worker)
        return finished

    def alive(self) -> bool:
        return any(worker.live for worker in self.workers)

    def no_more(self) -> None:
        self.ending = True
        for worker in self.workers:
            if worker.live and worker.ready and worker.current is None and not worker.queue:
                self._send_next(worker)

    def leftover(self) -> str:
        if not any(worker.ready for worker in self.workers):
            reason = self.setup_errors[0] if self.setup_errors else "they stopped"
            raise SemfuseError(f"no worker could set up its fuser: {reason}")
        return "not fused: no worker was left to fuse it"

    def stop(self, wait_s: float) -> None:
        """Workers that were sent None close their handler and exit within `wait_s` (those
        still starting are sent it now); the others (all of them, in an interrupted run) are
        stopped with SIGTERM, which lets one that is writing remove its temp file, and killed
        if they linger."""
        if wait_s > 0:
            self.ending = True
            for worker in self.workers:
                if worker.live and worker.current is None and not worker.queue:
                    self._send_next(worker)
        deadline = time.monotonic() + wait_s
        for worker in self.workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in self.workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
