"""Fusing many image sets into a folder: the plan, and running it on the workers of an
executor (executors.py): in this process or in N worker processes on this machine by
default, on Ray actors from engine/streams/ray_batch.py.

Each set's output is `OUTDIR/<category>/<set name>.<ext>`: the category and set name of
discovery (engine/evaluation/datasets.py), so outputs of a folder of categories lie as its sets do (a
category below a grouping folder, `roadscene/infrared_visible`, is nested folders).

Resumable: an output that exists is skipped, unless `force`. Every output is written
atomically (temp file beside it, then rename; see cache.atomic_write_bytes), so an output
that exists is complete; a temp file left by a killed run is hidden (`.NAME.*.tmp`), never
taken for an output, and removed by a later write once it is a day old.

A set that fails (unreadable or corrupt file, sizes that differ, a malformed CSV row, ...)
is recorded with its one-line reason and the others go on. A full disk is the exception: it
would fail every set after it, so the batch stops at the first one (DiskFull), keeping what
it has written; run it again once there is room and it resumes.

Workers each open one Fuser once and fuse one set at a time as they are handed out; they
split the machine's cores, and the fused pixels do not depend on the thread count
(tests/test_batch.py holds the bytes of 2 workers to those of `semfuse-rt fuse`). Workers
that see this machine's files read each set and write its output (FuseFiles); the others
(Ray's nodes) get the decoded images and send back the fused one, which this process
writes (FuseImages). On Ctrl-C or SIGTERM the workers are stopped; a worker stopped
mid-write removes its temp file.
"""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semfuse_rt.engine.fuse.fuse_options import FuseOptions, fuse_options
from semfuse_rt.engine.evaluation.datasets import FusionSet, RejectedRow, category_folders
from semfuse_rt.engine.io.images import (DEFAULT_MAX_PIXELS, EIGHT_BIT_ONLY, WRITE_FORMATS, InputFiles,
                                         check_not_an_input, check_output, has_16_bit_samples, load_image, save_image)
from semfuse_rt.engine.streams.executor_processes import one_line, worker_threads
from semfuse_rt.engine.streams.executor_registry import executor_named
from semfuse_rt.engine.streams.executors import Done, RaySettings
from semfuse_rt.engine.streams.ray_session import FuserActor
from semfuse_rt.errors import SemfuseError

__all__ = ["DEFAULT_EXTENSION", "BatchJob", "BatchPlan", "SetOutcome", "BatchReport", "DiskFull", "output_extension",
           "plan_batch", "run_batch", "fuse_job", "read_set", "FuseFiles", "FuseImages", "failed_outcome", "one_line",
           "is_disk_full", "worker_threads", "check_fuser_options"]

DEFAULT_EXTENSION = ".png"
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True)
class BatchJob:
    """One set and where its fused image goes."""

    fusion_set: FusionSet
    output: Path

    @property
    def key(self) -> str:
        return self.fusion_set.key


@dataclass(frozen=True)
class SetOutcome:
    """What became of one set: `error` is None where it was fused and written; `disk_full`
    where it failed for want of space (is_disk_full)."""

    key: str
    output: str
    error: str | None = None
    seconds: float = 0.0
    disk_full: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchPlan:
    todo: list[BatchJob]
    finished: list[BatchJob]  # outputs already there: skipped
    rejected: list[SetOutcome] = field(default_factory=list)  # sets that cannot be fused as given: failed

    @property
    def total(self) -> int:
        return len(self.todo) + len(self.finished) + len(self.rejected)


@dataclass
class BatchReport:
    fused: list[SetOutcome] = field(default_factory=list)
    failed: list[SetOutcome] = field(default_factory=list)
    skipped: list[BatchJob] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the fusing, set-up of workers or actors included

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def sets_per_second(self) -> float:
        return len(self.fused) / self.seconds if self.seconds > 0 else 0.0

    def record(self, outcome: SetOutcome) -> None:
        """Files the outcome; DiskFull where it failed for want of space, which every set
        after it would too."""
        (self.fused if outcome.ok else self.failed).append(outcome)
        if outcome.disk_full:
            raise DiskFull(f"{outcome.error}; the batch stopped there, keeping the {len(self.fused)} set(s) fused "
                           "so far: free some space and run the same command again to resume",
                           earlier=[each for each in self.failed if each is not outcome])

    def summary(self) -> str:
        return (f"{len(self.fused)} fused, {len(self.skipped)} skipped (already done), {len(self.failed)} failed "
                f"in {self.seconds:.1f} s ({self.sets_per_second:.2f} sets/s)")


class DiskFull(SemfuseError):
    """A batch stopped by a full disk or quota; `earlier`: the sets that had failed before
    it, for other reasons, so that their reasons are not lost with the batch."""

    def __init__(self, message: str, earlier: list[SetOutcome] | None = None):
        super().__init__(message)
        self.earlier = earlier or []


# ----------------------------------------------------------------------------------- the plan

def output_extension(ext: str) -> str:
    """`png` or `.PNG` -> `.png`; one of the formats save_image writes."""
    extension = "." + ext.strip().lstrip(".").lower()
    if extension not in WRITE_FORMATS:
        raise SemfuseError(f"--ext {ext!r}: use one of {', '.join(sorted(e[1:] for e in WRITE_FORMATS))}")
    return extension


def _path_component(text: str, what: str, fusion_set: FusionSet) -> str:
    # Names come from a CSV too: none may lead out of OUTDIR or into a hidden temp name.
    if not text or text in (".", "..") or "/" in text or "\\" in text or text.startswith("."):
        raise SemfuseError(f"set {fusion_set.key!r}: its {what} {text!r} cannot be a file name in the output folder")
    return text


def plan_batch(sets: Sequence[FusionSet], outdir: str | os.PathLike, *, ext: str = DEFAULT_EXTENSION,
               force: bool = False, rejected: Sequence[RejectedRow] = ()) -> BatchPlan:
    """Each set's output under `outdir`, split into those to fuse and those already done;
    `rejected` (CSV rows that name no usable set) and sets whose names cannot be file names
    are failed outcomes of the plan. SemfuseError where an output would replace one of its
    set's inputs, two sets would share an output, or sets of 16-bit images would go to a
    format that holds only 8 bits (from the headers, so before any set is fused)."""
    outdir, extension = Path(outdir), output_extension(ext)
    if outdir.exists() and not outdir.is_dir():
        raise SemfuseError(f"{outdir}: not a folder")
    # Every output against every set's inputs: an OUTDIR that overlaps the sets' folder
    # could hold another set's input where an output goes.
    inputs = InputFiles((source, f"input {index} of set {fusion_set.key!r}")
                        for fusion_set in sets for index, source in enumerate(fusion_set.sources, start=1))
    todo: list[BatchJob] = []
    finished: list[BatchJob] = []
    claimed: dict[str, str] = {}  # output, normalised -> the set it is for
    failed = [SetOutcome(row.key, "", row.reason) for row in rejected]
    for fusion_set in sets:
        try:
            # A category found below a grouping folder (roadscene/infrared_visible) is nested folders.
            category = [_path_component(part, "category", fusion_set) for part in category_folders(fusion_set.category)]
            name = _path_component(fusion_set.name, "name", fusion_set)
        except SemfuseError as error:
            failed.append(SetOutcome(fusion_set.key, "", str(error)))
            continue
        output = outdir.joinpath(*category, f"{name}{extension}")
        key = os.path.normcase(str(output))
        if key in claimed:
            raise SemfuseError(f"sets {claimed[key]!r} and {fusion_set.key!r} would both be written to {output}")
        claimed[key] = fusion_set.key
        check_not_an_input(output, fusion_set.sources)
        replaced = inputs.replaced_by(output)
        if replaced is not None:
            raise SemfuseError(f"{output}: the output of set {fusion_set.key!r} would replace {replaced[1]} "
                               f"({replaced[0]}); write the batch to a folder apart from the sets")
        job = BatchJob(fusion_set, output)
        # is_file: an output is a file; a folder of that name is left for the write to report.
        (finished if output.is_file() and not force else todo).append(job)
    if extension in EIGHT_BIT_ONLY:
        _check_eight_bit(todo, extension)
    return BatchPlan(todo, finished, failed)


def _check_eight_bit(jobs: Sequence[BatchJob], extension: str) -> None:
    # Refused, not written under another suffix: a resumed run finds each output by its name.
    deep = [job.key for job in jobs if any(has_16_bit_samples(source) for source in job.fusion_set.sources)]
    if deep:
        named = ", ".join(deep[:5]) + (f" and {len(deep) - 5} more" if len(deep) > 5 else "")
        raise SemfuseError(f"--ext {extension[1:]} holds only 8-bit images, and {len(deep)} set(s) are 16-bit "
                           f"({named}); use --ext png or --ext tif")


def make_output_folders(jobs: Sequence[BatchJob]) -> None:
    for folder in sorted({job.output.parent for job in jobs}):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SemfuseError(f"{folder}: cannot create the output folder ({error.strerror})") from None


# ------------------------------------------------------------------------------ fusing a set

def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error` comes of a full disk or quota. The chain is followed because writers
    re-raise the OSError as a one-line SemfuseError (`from None` hides it from tracebacks
    but keeps it as the context)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def failed_outcome(job: BatchJob, error: BaseException, seconds: float = 0.0) -> SetOutcome:
    return SetOutcome(job.key, str(job.output), one_line(error), seconds, is_disk_full(error))


def fuse_job(actor: FuserActor, job: BatchJob, max_pixels: int = DEFAULT_MAX_PIXELS) -> SetOutcome:
    """Fuse one set and write its output atomically, as `semfuse-rt fuse` does; a failure of
    this set is its outcome, not an exception."""
    started = time.perf_counter()
    try:
        actor.fuse_files(job.fusion_set.sources, job.output, max_pixels=max_pixels)
    except (SemfuseError, OSError) as error:
        return failed_outcome(job, error, time.perf_counter() - started)
    return SetOutcome(job.key, str(job.output), None, time.perf_counter() - started)


def read_set(job: BatchJob, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[np.ndarray]:
    """The set's images, decoded with the checks of `semfuse-rt fuse`, and its output checked
    for their depth, before any fusing."""
    images = [load_image(path, max_pixels) for path in job.fusion_set.sources]
    check_output(job.output, np.uint16 if any(image.dtype == np.uint16 for image in images) else np.uint8)
    return images


@dataclass(frozen=True)
class FuseFiles:
    """The batch's Work where the workers see this machine's files: each reads its set and
    writes the output itself (fuse_job); the result is the set's outcome."""

    method: str
    options: dict
    max_pixels: int = DEFAULT_MAX_PIXELS
    name: str = "batch"

    def start(self, slot: int, threads: int | None) -> _FilesHandler:
        return _FilesHandler(FuserActor(self.method, threads=threads, **self.options), self.max_pixels)


@dataclass
class _FilesHandler:
    actor: FuserActor
    max_pixels: int

    def ready(self) -> bool:
        return self.actor.ready()

    def run(self, job: BatchJob) -> SetOutcome:
        return fuse_job(self.actor, job, self.max_pixels)

    def close(self) -> None:
        self.actor.close()


@dataclass(frozen=True)
class FuseImages:
    """The batch's Work where the workers need not see this machine's files (Ray's nodes):
    the driver reads each set and writes its output (run_batch); the workers get the decoded
    images, an item `(job, images)`, and give back (fused image, None, seconds, False), or
    (None, the set's one-line reason, seconds, whether it is a full disk: the worker's spill
    folder, on its node)."""

    method: str
    options: dict
    name: str = "batch"

    def start(self, slot: int, threads: int | None) -> _ImagesHandler:
        return _ImagesHandler(FuserActor(self.method, threads=threads, **self.options))


@dataclass
class _ImagesHandler:
    actor: FuserActor

    def ready(self) -> bool:
        return self.actor.ready()

    def run(self, item: tuple[BatchJob, Sequence[np.ndarray]]) -> tuple[np.ndarray | None, str | None, float, bool]:
        started = time.perf_counter()
        try:
            return self.actor.fuse_arrays(item[1]), None, time.perf_counter() - started, False
        except (SemfuseError, OSError) as error:
            return None, one_line(error), time.perf_counter() - started, is_disk_full(error)

    def close(self) -> None:
        self.actor.close()


def check_fuser_options(method: str, options: dict) -> None:
    """The options' one-line errors (unknown method, bad --steps, ...) before any work: a
    Fuser checks them on construction and sets nothing up until it is opened."""
    from semfuse_rt.engine.fuse.fuser import Fuser

    Fuser(method, **options)


def run_batch(plan: BatchPlan, options: FuseOptions | str = "max", *, executor: str = "processes", workers: int = 1,
              ray: RaySettings | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
              on_outcome: Callable[[SetOutcome], None] | None = None, **keywords) -> BatchReport:
    """Fuse the plan's sets with one Fuser of `options` (a FuseOptions, or a method's name and
    `keywords`, those of Fuser) on each
    of `workers` workers of `executor` (executor_registry: `processes`, one of them in this
    process; `threads`; `ray`, with `ray`'s settings, engine/streams/ray_batch.py). `on_outcome`
    is called, in this process, as each set finishes. SemfuseError, before any work, for bad
    options or an executor that cannot run here; and where no worker could set up its Fuser;
    DiskFull at the first set that finds the disk full."""
    fuse = fuse_options(options, **keywords)
    method, given = fuse.method, fuse.given()
    runner = executor_named(executor)
    check_fuser_options(method, given)
    runner.check_available()
    workers = runner.check_workers(workers)  # after every error, so that a warning is never a second line
    report = BatchReport(failed=list(plan.rejected), skipped=list(plan.finished))
    if not plan.todo:
        return report
    pool = runner(min(workers, len(plan.todo)), ray=ray)

    def finish(outcome: SetOutcome) -> None:
        report.record(outcome)
        if on_outcome:
            on_outcome(outcome)

    started = time.perf_counter()
    try:
        if runner.sees_local_files:
            make_output_folders(plan.todo)
            with closing(pool.run(FuseFiles(method, given, max_pixels), plan.todo, in_order=False)) as done:
                for each in done:
                    finish(each.result if each.ok else SetOutcome(each.item.key, str(each.item.output), each.failure))
        else:
            sets = _read_sets(plan.todo, max_pixels, finish)
            with closing(pool.run(FuseImages(method, given), sets, in_order=False)) as done:
                for each in done:
                    finish(_written(each))
    finally:
        report.seconds = time.perf_counter() - started
    return report


def _read_sets(jobs: Sequence[BatchJob], max_pixels: int,
               finish: Callable[[SetOutcome], None]) -> Iterator[tuple[BatchJob, list[np.ndarray]]]:
    """Each set with its images, read as a worker has room for it; a set that cannot be read
    is finished here, failed."""
    # Once the workers are up: a cluster that is not there leaves no folders behind.
    make_output_folders(jobs)
    for job in jobs:
        try:
            images = read_set(job, max_pixels)
        except (SemfuseError, OSError) as error:
            finish(failed_outcome(job, error))
            continue
        yield job, images


def _written(done: Done) -> SetOutcome:
    """The outcome of a set fused by a worker without this machine's files: its image written
    here, atomically."""
    job = done.item[0]
    if not done.ok:
        return SetOutcome(job.key, str(job.output), done.failure)
    image, error, seconds, disk_full = done.result
    if error is not None:
        return SetOutcome(job.key, str(job.output), error, seconds, disk_full)
    try:
        save_image(job.output, image)
    except (SemfuseError, OSError) as failure:
        return failed_outcome(job, failure, seconds)
    return SetOutcome(job.key, str(job.output), None, seconds)
