"""The ray executor: Ray actors, on a cluster or on a local instance that lives as long as
the run, each holding its Work's handler (`WorkActor`). Items go to the actors as values,
so the nodes need no filesystem shared with the driver; each actor has a few items queued
(`per_worker`), so that it never waits for the driver. An actor that dies fails the items
it held and the others go on; Ctrl-C is seen within a poll of the wait (ray_session.wait_for).
"""
from __future__ import annotations

from typing import Generator, Iterable

from semfuse_rt.engine.limits.workers import cores
from semfuse_rt.engine.streams.executors import Done, Executor, Handler, RaySettings, Work, schedule
from semfuse_rt.engine.streams.executor_processes import worker_threads
from semfuse_rt.engine.streams.ray_session import (import_ray, ray_failure, ray_session, signals_unwrapped,
                                                   start_actors, wait_for)
from semfuse_rt.errors import SemfuseError

__all__ = ["RayExecutor", "WorkActor", "IN_FLIGHT"]

IN_FLIGHT = 2  # items queued on each actor


class WorkActor:
    """A Work's handler, as a Ray actor: made, set up and used where the actor lives."""

    def __init__(self, work: Work, slot: int, threads: int | None):
        self.handler: Handler = work.start(slot, threads)

    def ready(self) -> bool:
        self.handler.ready()
        return True

    def run(self, item: object) -> object:
        return self.handler.run(item)

    def close(self) -> None:
        self.handler.close()


class RayExecutor(Executor):
    name = "ray"
    title = "Ray"
    in_this_process = False
    sees_local_files = False

    def __init__(self, workers: int, ray: RaySettings | None = None):
        self.workers = self.check_workers(workers)
        self.settings = ray or RaySettings()

    @classmethod
    def check_available(cls) -> None:
        import_ray()

    @classmethod
    def check_workers(cls, workers: int) -> int:
        if not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1):
            raise SemfuseError(f"--ray-actors must be 1 or more, got {workers}")
        return workers

    def run(self, work: Work, items: Iterable, *, in_order: bool) -> Generator[Done, None, None]:
        settings, actors = self.settings, self.workers
        local = settings.address is None
        cpus = settings.cpus_per_actor or (worker_threads(actors) if local else 1)
        # A local instance gets room for every actor, even more of them than cores: they share.
        local_cpus = max(cores(), actors * cpus) if local else None
        with ray_session(settings.address, num_cpus=local_cpus, connect_timeout_s=settings.connect_timeout_s) as ray:
            pool = start_actors(WorkActor, [(work, slot, cpus) for slot in range(actors)],
                                num_gpus=settings.num_gpus_per_actor, num_cpus=cpus,
                                ready_timeout_s=settings.ready_timeout_s)
            try:
                yield from schedule(_RayPool(ray, pool), items, in_order=in_order, per_worker=IN_FLIGHT)
            finally:
                for actor in pool:
                    ray.kill(actor)


class _RayPool:
    def __init__(self, ray, actors: list):
        self.ray = ray
        self.actors = actors
        self.live = set(range(len(actors)))
        self.load = [0] * len(actors)
        self.out: dict = {}  # object ref -> (slot, index, item)

    def size(self) -> int:
        return len(self.actors)

    def free(self, per_worker: int) -> list[int]:
        return [slot for slot in sorted(self.live) for _ in range(per_worker - self.load[slot])]

    def submit(self, slot: int, index: int, item: object) -> bool:
        if slot not in self.live:
            return False
        self.out[self.actors[slot].run.remote(item)] = (slot, index, item)
        self.load[slot] += 1
        return True

    def wait(self) -> list[Done]:
        from ray.exceptions import RayActorError, RayError

        (ref,) = wait_for(list(self.out))
        slot, index, item = self.out.pop(ref)
        self.load[slot] -= 1
        try:
            with signals_unwrapped():
                return [Done(index, item, self.ray.get(ref))]
        except RayActorError as died:
            self.live.discard(slot)
            reason = ray_failure(died)
            return [Done(index, item, failure=f"the actor fusing it stopped: {reason}", cause=reason)]
        except RayError as failure:  # an error that is not the item's own: still this item's reason
            return [Done(index, item, failure=ray_failure(failure))]

    def alive(self) -> bool:
        return bool(self.live)

    def no_more(self) -> None:
        pass

    def leftover(self) -> str:
        return "not fused: every Ray actor had stopped"
