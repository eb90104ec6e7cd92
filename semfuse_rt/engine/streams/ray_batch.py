"""The batch of engine/streams/batch.py on Ray: the same plan, resume and outcomes, fused by N actors
that each hold one Fuser, on a cluster or on a local instance (the ray executor,
executor_ray.py).

The driver reads each set, sends its decoded images to an idle actor and writes the fused
image it gets back, atomically (save_image), as the local batch does (batch.FuseImages). So
the nodes need semfuse-rt installed but no filesystem shared with the driver, and an
interrupted driver leaves no half-written output. The actors are fed from a queue kept by
the driver: each has up to `executor_ray.IN_FLIGHT` sets queued, so that it never waits for
the driver's reading.

A set that fails (unreadable, sizes that differ, ...) is recorded with its one-line reason;
so is every set on an actor that dies, and the other actors go on. A full disk stops the
batch, as it does the local one (batch.DiskFull).
"""
from __future__ import annotations

from collections.abc import Callable

from semfuse_rt.engine.io.images import DEFAULT_MAX_PIXELS
from semfuse_rt.engine.streams.batch import BatchPlan, BatchReport, SetOutcome, run_batch
from semfuse_rt.engine.streams.executors import RaySettings

__all__ = ["run_ray_batch"]


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
    settings = RaySettings(address=address, num_gpus_per_actor=num_gpus_per_actor, cpus_per_actor=cpus_per_actor,
                           connect_timeout_s=connect_timeout_s, ready_timeout_s=ready_timeout_s)
    return run_batch(plan, method, executor="ray", workers=actors, ray=settings, max_pixels=max_pixels,
                     on_outcome=on_outcome, **options)
