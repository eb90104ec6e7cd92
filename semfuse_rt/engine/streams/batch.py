"""Fusing many image sets into a folder: the plan, and running it in this process or in N
worker processes on this machine (engine/streams/ray_batch.py runs the same plan on Ray).

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

Workers: `spawn`ed processes (torch and fork do not mix), each opening one Fuser once and
fusing one set at a time as the parent hands them out; they split the machine's cores, and
the fused pixels do not depend on the thread count (tests/test_batch.py holds the bytes of
2 workers to those of `semfuse-rt fuse`). On Ctrl-C or SIGTERM the parent stops them; a
worker stopped mid-write removes its temp file.
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

from semfuse_rt.engine.evaluation.datasets import FusionSet, RejectedRow, category_folders
from semfuse_rt.engine.io.images import (DEFAULT_MAX_PIXELS, EIGHT_BIT_ONLY, WRITE_FORMATS, InputFiles,
                                      check_not_an_input, has_16_bit_samples)
from semfuse_rt.engine.limits.workers import check_workers
from semfuse_rt.engine.streams.ray_session import FuserActor, sigint_ignored_by_new_processes
from semfuse_rt.errors import SemfuseError

__all__ = ["DEFAULT_EXTENSION", "BatchJob", "BatchPlan", "SetOutcome", "BatchReport", "DiskFull", "output_extension",
           "plan_batch", "run_batch", "fuse_job", "failed_outcome", "one_line", "is_disk_full", "worker_threads",
           "check_fuser_options"]

DEFAULT_EXTENSION = ".png"
STOP_GRACE_SECONDS = 10  # how long stopped workers get to remove their temp files and exit
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

def one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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


def check_fuser_options(method: str, options: dict) -> None:
    """The options' one-line errors (unknown method, bad --steps, ...) before any work: a
    Fuser checks them on construction and sets nothing up until it is opened."""
    from semfuse_rt.engine.fuse.fuser import Fuser

    Fuser(method, **options)


def worker_threads(processes: int) -> int:
    """Threads for each of `processes` fusing side by side: the machine's cores shared out."""
    from semfuse_rt.engine.backends.ort.loader import cores

    return max(1, cores() // processes)


def run_batch(plan: BatchPlan, method: str = "max", *, workers: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS,
              on_outcome: Callable[[SetOutcome], None] | None = None, **options) -> BatchReport:
    """Fuse the plan's sets with one Fuser of `method` and `options` (those of Fuser), in this
    process (`workers` 1) or in `workers` processes. `on_outcome` is called, in this process,
    as each set finishes. SemfuseError, before any work, for bad options; and where no worker
    could set up its Fuser; DiskFull at the first set that finds the disk full."""
    check_fuser_options(method, options)
    workers = check_workers(workers)  # after every error, so that a warning is never a second line
    report = BatchReport(failed=list(plan.rejected), skipped=list(plan.finished))
    if not plan.todo:
        return report
    make_output_folders(plan.todo)
    started = time.perf_counter()
    workers = min(workers, len(plan.todo))
    try:
        if workers == 1:
            _run_here(plan.todo, method, options, max_pixels, report, on_outcome)
        else:
            _run_in_workers(plan.todo, method, options, max_pixels, workers, report, on_outcome)
    finally:
        report.seconds = time.perf_counter() - started
    return report


def _run_here(jobs, method, options, max_pixels, report, on_outcome) -> None:
    actor = FuserActor(method, **options)
    try:
        for job in jobs:
            outcome = fuse_job(actor, job, max_pixels)
            report.record(outcome)
            if on_outcome:
                on_outcome(outcome)
    finally:
        actor.close()


# ---------------------------------------------------------------------------- worker processes

class _Stopped(BaseException):
    """SIGTERM from the parent: unwinds the worker so that atomic writes remove their temp files."""


def _stop(_signum, _frame):
    raise _Stopped()


def _worker(connection, method: str, options: dict, threads: int, max_pixels: int) -> None:
    """A worker process: one Fuser, then one set per message until None."""
    # Ctrl-C reaches the whole process group; the parent decides, and stops workers with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    try:
        try:
            actor = FuserActor(method, threads=threads, **options)
            actor.ready()
        except (SemfuseError, OSError) as error:
            connection.send(("setup failed", one_line(error)))
            return
        connection.send(("ready", None))
        try:
            while (job := connection.recv()) is not None:
                connection.send(("done", fuse_job(actor, job, max_pixels)))
        finally:
            actor.close()
    except (_Stopped, EOFError, BrokenPipeError):
        pass  # stopped by the parent, or the parent is gone: nothing left to report to
    finally:
        # Nothing is left to unwind: a SIGTERM while the process exits would only print a
        # traceback from multiprocessing's bootstrap.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@dataclass
class _WorkerHandle:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    job: BatchJob | None = None
    ready: bool = False


def _run_in_workers(jobs, method, options, max_pixels, count, report, on_outcome) -> None:
    context = multiprocessing.get_context("spawn")
    threads = worker_threads(count)
    pending = list(reversed(jobs))  # popped from the end: in plan order
    handles: list[_WorkerHandle] = []
    setup_errors: list[str] = []

    def finish(outcome: SetOutcome) -> None:
        report.record(outcome)
        if on_outcome:
            on_outcome(outcome)

    def hand_out(handle: _WorkerHandle) -> None:
        job = pending.pop() if pending else None
        try:
            handle.connection.send(job)
        except OSError:  # it has just died: the job goes back, and its sentinel says the rest
            if job is not None:
                pending.append(job)
            return
        handle.job = job

    try:
        with sigint_ignored_by_new_processes():
            for _ in range(count):
                parent_end, child_end = context.Pipe()
                process = context.Process(target=_worker, args=(child_end, method, options, threads, max_pixels),
                                          daemon=True, name="semfuse-rt batch worker")
                process.start()
                child_end.close()
                handles.append(_WorkerHandle(process, parent_end))
        live = list(handles)
        while live:
            waited: list[Connection | int] = [h.connection for h in live] + [h.process.sentinel for h in live]
            by_object: dict[object, _WorkerHandle] = dict(zip(waited, live + live))  # by pipe and by sentinel
            for ready in wait(waited):
                handle = by_object[ready]
                if handle not in live:
                    continue  # its pipe and its sentinel both fired
                if ready is handle.connection:
                    try:
                        kind, value = handle.connection.recv()
                    except EOFError:
                        kind, value = "gone", None
                else:
                    kind, value = "gone", None
                if kind == "ready":
                    handle.ready = True
                    hand_out(handle)
                elif kind == "done":
                    handle.job = None
                    finish(value)
                    hand_out(handle)
                elif kind == "setup failed":
                    setup_errors.append(value)
                    live.remove(handle)
                else:  # the process ended without a word: killed, out of memory, crashed
                    handle.process.join()
                    if handle.job is not None:
                        finish(SetOutcome(handle.job.key, str(handle.job.output),
                                          f"the worker fusing it stopped (exit status {handle.process.exitcode})"))
                        handle.job = None
                    live.remove(handle)
                if handle in live and handle.ready and handle.job is None and not pending:
                    live.remove(handle)  # it was sent None and closes its Fuser
        if pending:
            if not any(h.ready for h in handles):
                reason = setup_errors[0] if setup_errors else "they stopped"
                raise SemfuseError(f"no worker could set up its fuser: {reason}")
            for job in reversed(pending):
                finish(SetOutcome(job.key, str(job.output), "not fused: no worker was left to fuse it"))
    except BaseException:
        _stop_workers(handles, wait_s=0)
        raise
    _stop_workers(handles, wait_s=STOP_GRACE_SECONDS)


def _stop_workers(handles: list[_WorkerHandle], wait_s: float) -> None:
    """Workers that were sent None close their Fuser and exit within `wait_s`; the others
    (all of them, in an interrupted batch) are stopped with SIGTERM, which lets one that is
    writing remove its temp file, and killed if they linger."""
    deadline = time.monotonic() + wait_s
    for handle in handles:
        handle.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if handle.process.is_alive():
            handle.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for handle in handles:
        handle.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if handle.process.is_alive():
            handle.process.kill()
            handle.process.join()
        handle.connection.close()
