"""The batch of engine/streams/batch.py on Ray: the same plan, resume and outcomes, fused by N actors
that each hold one Fuser, on a cluster or on a local instance.

The driver reads each set, sends its decoded images to an idle actor and writes the fused
image it gets back, atomically (save_image), as the local batch does. So the nodes need
semfuse-rt installed but no filesystem shared with the driver, and an interrupted driver
leaves no half-written output. The actors are fed from a queue kept by the driver: each
has up to `IN_FLIGHT` sets queued, so that it never waits for the driver's reading.

A set that fails (unreadable, sizes that differ, ...) is recorded with its one-line reason;
so is every set on an actor that dies, and the other actors go on. A full disk stops the
batch, as it does the local one (batch.DiskFull).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Sequence

import numpy as np

from semfuse_rt.engine.backends.ort.loader import cores
from semfuse_rt.engine.streams.batch import (BatchJob, BatchPlan, BatchReport, SetOutcome, check_fuser_options,
                                     failed_outcome, is_disk_full, make_output_folders, one_line, worker_threads)
from semfuse_rt.engine.io.images import DEFAULT_MAX_PIXELS, check_output, load_image, save_image
from semfuse_rt.engine.streams.ray_session import (FuserActor, import_ray, ray_failure, ray_session, signals_unwrapped,
                                           start_fuser_actors, wait_for)
from semfuse_rt.errors import SemfuseError

__all__ = ["IN_FLIGHT", "SetFuserActor", "read_set", "run_ray_batch"]

IN_FLIGHT = 2  # sets queued on each actor


class SetFuserActor(FuserActor):
    """A FuserActor whose failures on one set come back as that set's reason."""

    def fuse_set(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray | None, str | None, float, bool]:
        """(fused image, None, seconds, False), or (None, the one-line reason, seconds, whether
        the reason is a full disk: the actor's spill folder, on its node)."""
        started = time.perf_counter()
        try:
            return self.fuse_arrays(images), None, time.perf_counter() - started, False
        except (SemfuseError, OSError) as error:
            return None, one_line(error), time.perf_counter() - started, is_disk_full(error)


def read_set(job: BatchJob, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[np.ndarray]:
    """The set's images, decoded with the checks of `semfuse-rt fuse`, and its output checked
    for their depth, before any fusing."""
    images = [load_image(path, max_pixels) for path in job.fusion_set.sources]
    check_output(job.output, np.uint16 if any(image.dtype == np.uint16 for image in images) else np.uint8)
    return images


def run_ray_batch(plan: BatchPlan, method: str = "max", *, actors: int = 1, address: str | None = None,
                  num_gpus_per_actor: float = 0, cpus_per_actor: int | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, on_outcome: Callable[[SetOutcome], None] | None = None,
                  ready_timeout_s: float = 600, connect_timeout_s: float | None = None, **options) -> BatchReport:
    """Fuse the plan's sets on `actors` Ray actors, each with one Fuser of `method` and
    `options`, on the cluster at `address` or, without one, on a local instance that lives
    as long as this call.

    `cpus_per_actor` (the CPUs each actor claims and its threads) defaults, locally, to the
    cores shared out among the actors, and on a cluster to 1, so that a node holds as many
    actors as it has cores. SemfuseError, before any work, for bad options or without Ray;
    where the cluster does not answer within `connect_timeout_s` (as in ray_session); where the actors cannot be
    set up or placed within `ready_timeout_s`; batch.DiskFull where a disk fills."""
    if not (isinstance(actors, int) and actors >= 1):
        raise SemfuseError(f"--ray-actors must be 1 or more, got {actors}")
    if cpus_per_actor is not None and cpus_per_actor < 1:
        raise SemfuseError(f"an actor needs 1 CPU or more, got {cpus_per_actor}")
    check_fuser_options(method, options)
    import_ray()
    report = BatchReport(failed=list(plan.rejected), skipped=list(plan.finished))
    if not plan.todo:
        return report
    actors = min(actors, len(plan.todo))
    cpus = cpus_per_actor or (worker_threads(actors) if address is None else 1)
    # A local instance gets room for every actor, even more of them than cores: they share.
    local_cpus = max(cores(), actors * cpus) if address is None else None
    started = time.perf_counter()
    try:
        with ray_session(address, num_cpus=local_cpus, connect_timeout_s=connect_timeout_s) as ray:
            pool = start_fuser_actors(actors, method, num_gpus=num_gpus_per_actor, num_cpus=cpus,
                                      cls=SetFuserActor, ready_timeout_s=ready_timeout_s, **options)
            # Once the actors are up: a cluster that is not there leaves no folders behind.
            make_output_folders(plan.todo)
            _feed(ray, pool, iter(plan.todo), max_pixels, report, on_outcome)
    finally:
        report.seconds = time.perf_counter() - started
    return report


def _feed(ray, pool: list, jobs: Iterator[BatchJob], max_pixels: int, report: BatchReport, on_outcome) -> None:
    from ray.exceptions import RayActorError, RayError

    in_flight: dict = {}  # object ref -> (actor, job)
    live = list(pool)

    def finish(outcome: SetOutcome) -> None:
        report.record(outcome)
        if on_outcome:
            on_outcome(outcome)

    def submit(actor) -> None:
        for job in jobs:
            try:
                images = read_set(job, max_pixels)
            except (SemfuseError, OSError) as error:
                finish(failed_outcome(job, error))
                continue
            in_flight[actor.fuse_set.remote(images)] = (actor, job)
            return

    for actor in live:
        for _ in range(IN_FLIGHT):
            submit(actor)
    while in_flight:
        (ref,) = wait_for(list(in_flight))
        actor, job = in_flight.pop(ref)
        try:
            with signals_unwrapped():
                image, error, seconds, disk_full = ray.get(ref)
        except RayActorError as died:
            if actor in live:
                live.remove(actor)
            finish(SetOutcome(job.key, str(job.output), f"the actor fusing it stopped: {ray_failure(died)}"))
            continue
        except RayError as failure:  # an error that is not the set's: still this set's reason
            image, error, seconds, disk_full = None, ray_failure(failure), 0.0, False
        if error is not None:
            finish(SetOutcome(job.key, str(job.output), error, seconds, disk_full))
        else:
            try:
                save_image(job.output, image)
            except (SemfuseError, OSError) as failure:
                finish(failed_outcome(job, failure, seconds))
            else:
                finish(SetOutcome(job.key, str(job.output), None, seconds))
        if actor in live:
            submit(actor)
    for job in jobs:  # only where every actor has died
        finish(SetOutcome(job.key, str(job.output), "not fused: every Ray actor had stopped"))
