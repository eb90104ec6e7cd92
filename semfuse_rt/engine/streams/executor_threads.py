"""The threads executor: one thread of this process per worker, each with its own handler,
running its items one after another in the order given (so a warm start holds from one of
its items to the next). The workers share this process's memory: a Work may hand them
fusers opened here. A worker's exception is raised to the caller, as the same call in one
thread would raise it; the items not started are then cancelled and the threads end."""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from typing import Generator, Iterable

from semfuse_rt.engine.limits.workers import check_workers, cores
from semfuse_rt.engine.streams.executors import Done, Executor, Handler, Work, schedule

__all__ = ["ThreadsExecutor"]


class ThreadsExecutor(Executor):
    name = "threads"
    title = "threads"
    in_this_process = True
    sees_local_files = True

    @classmethod
    def check_workers(cls, workers: int) -> int:
        return check_workers(workers)

    def run(self, work: Work, items: Iterable, *, in_order: bool) -> Generator[Done, None, None]:
        threads = max(1, cores() // self.workers) if self.workers > 1 else None
        handlers: list[Handler] = []
        try:
            for slot in range(self.workers):
                handlers.append(work.start(slot, threads))
                handlers[-1].ready()
            pool = _ThreadPool(handlers, work.name)
            try:
                # One item more than workers in order: the next frame is read while they fuse.
                yield from schedule(pool, items, in_order=in_order, per_worker=1, window=self.workers + 1)
            finally:
                pool.close()
        finally:
            for handler in handlers:
                handler.close()


class _ThreadPool:
    def __init__(self, handlers: list[Handler], name: str):
        self.handlers = handlers
        self.threads = [ThreadPoolExecutor(1, thread_name_prefix=f"semfuse-{name}-{slot}")
                        for slot in range(len(handlers))]
        self.out: dict[Future, tuple[int, int, object]] = {}  # future -> (slot, index, item)
        self.load = [0] * len(handlers)

    def size(self) -> int:
        return len(self.handlers)

    def free(self, per_worker: int) -> list[int]:
        return [slot for slot in range(len(self.handlers)) for _ in range(per_worker - self.load[slot])]

    def submit(self, slot: int, index: int, item: object) -> bool:
        self.out[self.threads[slot].submit(self.handlers[slot].run, item)] = (slot, index, item)
        self.load[slot] += 1
        return True

    def wait(self) -> list[Done]:
        finished, _ = wait_for_futures(list(self.out), return_when=FIRST_COMPLETED)
        done = []
        for future in sorted(finished, key=lambda each: self.out[each][1]):
            slot, index, item = self.out.pop(future)
            self.load[slot] -= 1
            done.append(Done(index, item, future.result()))
        return done

    def alive(self) -> bool:
        return True

    def no_more(self) -> None:
        pass

    def leftover(self) -> str:
        return "not fused: no worker was left to fuse it"  # threads do not stop on their own

    def close(self) -> None:
        """Now, not when collected: the items running finish, the rest are cancelled, and the
        threads end before the handlers close."""
        for future in self.out:
            future.cancel()
        for thread in self.threads:
            thread.shutdown(wait=True)
