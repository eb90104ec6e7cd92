"""Fusing synchronised frame streams into a video: the plan, the run and its flicker. Each
frame is fused by video_frames.py's `VideoFuser`, warm-started from the previous frame of
its worker.

Flicker: the mean absolute frame-to-frame change of the fused video minus that of its
inputs (averaged over the inputs), in 8-bit grey levels: fusion that adds no temporal noise
scores about 0.

A run is a pipeline of threads: the decoder (video_io.prefetch) reads frame t+1 while the
workers fuse, and the encoder (video_io.write_behind) writes frame t-1 and measures its
flicker. Where the options resolve to the start image alone (the default preset `blend`),
the frames are fused by engine/fuse/start_only.py's fuse, as `make_fuser` picks it: no Fuser, no
backend, no weights and no torch in the process, and the same frames (the Fuser's steps-0
fuse runs the same code).
"""
from __future__ import annotations

import math
import os
import time
from contextlib import closing
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from semfuse_rt.engine.api import make_fuser
from semfuse_rt.engine.fuse.fuse_options import FuseOptions
from semfuse_rt.engine.fuse.fusion_result import run_description
from semfuse_rt.engine.io.images import DEFAULT_MAX_PIXELS
from semfuse_rt.engine.fuse.methods import check_applicable, get_method
from semfuse_rt.engine.limits.option_checks import check_steps
from semfuse_rt.engine.streams.executor_registry import executor_named
from semfuse_rt.engine.streams.executors import Executor, RaySettings
from semfuse_rt.engine.streams.video_frames import (FrameFuser, FrameResult, VideoFuser, mean_abs_difference,
                                                    scene_change, Buffers)
from semfuse_rt.engine.streams.video_ray import VideoChunks, chunk_frame_results, chunks, default_chunk_frames
from semfuse_rt.engine.streams.video_io import (
    StreamInfo,
    check_quality,
    check_streams,
    check_video_output,
    check_video_size,
    open_writer,
    output_kind,
    prefetch,
    probe,
    read_synchronised,
    stream_rate,
    write_behind,
)
from semfuse_rt.engine.fuse.start_only import StartOnlyFuser, start_only_fuser
from semfuse_rt.errors import SemfuseError

# progress(frames done, frames in all)
FrameProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class FramesOnFusers:
    """The Work of a video's frames on fusers open in this process (the threads executor):
    worker w holds a VideoFuser over `fusers[w]` and fuses the frames given to it in turn,
    each warm-started from its own previous one (`video_options`: those of VideoFuser)."""

    fusers: tuple[FrameFuser, ...]
    video_options: dict
    name: str = "video"

    def start(self, slot: int, threads: int | None) -> _FramesHandler:
        # `threads` is not used: the fusers were opened with their share (local_fusers).
        return _FramesHandler(VideoFuser(self.fusers[slot], **self.video_options))


@dataclass
class _FramesHandler:
    video: VideoFuser

    def ready(self) -> bool:
        return True  # its fuser was opened with the others

    def run(self, frames: Sequence[np.ndarray]) -> FrameResult:
        return self.video(frames)

    def close(self) -> None:
        pass  # the fusers are closed by whoever opened them


class InterleavedVideoFuser:
    """Frames taken in turn by several `VideoFuser`s, each with its own fuser and thread (the
    threads executor, in order): worker w fuses frames w, w + N, w + 2N, ..., warm-started
    from its own previous frame. On a CPU, ONNX Runtime's sessions gain little from a second
    thread on one frame at a time (about 12% on 2 cores), so two one-thread workers nearly
    double the frame rate. Start-only frames split their own work over the cores too, yet
    two frames in flight still gained a few percent over one on the 2-core VM. Results come
    back in frame order."""

    def __init__(self, fusers: Sequence[FrameFuser], **video_options):
        if not fusers:
            raise SemfuseError("interleaved fusion needs at least one fuser")
        VideoFuser(fusers[0], **video_options)  # the options' errors, here
        self.work = FramesOnFusers(tuple(fusers), video_options)

    def fuse_frames(self, frame_sets: Iterable[Sequence[np.ndarray]]
                    ) -> Iterator[tuple[Sequence[np.ndarray], FrameResult]]:
        executor = executor_named("threads")(len(self.work.fusers))
        with closing(executor.run(self.work, frame_sets, in_order=True)) as done:
            for each in done:
                result = each.result
                result.index = each.index  # the stream's, not the worker's own count
                yield each.item, result


# --------------------------------------------------------------------------- flicker

class FlickerMeter:
    """Accumulates, frame by frame, the mean absolute frame-to-frame change of a fused stream
    and of its inputs; `flicker` is the fused change minus the inputs' (8-bit grey levels)."""

    def __init__(self):
        self._fused: list[float] = []
        self._inputs: list[float] = []
        self._last: tuple[np.ndarray, Sequence[np.ndarray]] | None = None
        self._buffers = Buffers()  # the differences, in one buffer frame after frame

    def add(self, fused: np.ndarray, inputs: Sequence[np.ndarray]) -> None:
        if self._last is not None:
            last_fused, last_inputs = self._last
            self._fused.append(mean_abs_difference(last_fused, fused, self._buffers))
            self._inputs.append(scene_change(last_inputs, inputs, self._buffers))
        self._last = (fused, inputs)

    @property
    def fused_change(self) -> float:
        return float(np.mean(self._fused)) if self._fused else float("nan")

    @property
    def input_change(self) -> float:
        return float(np.mean(self._inputs)) if self._inputs else float("nan")

    @property
    def flicker(self) -> float:
        """NaN for fewer than two frames."""
        return self.fused_change - self.input_change


def mean_abs_change(frames: Iterable[np.ndarray]) -> float:
    """Mean over t of the mean absolute change from frame t-1 to frame t (8-bit grey levels)."""
    changes, last = [], None
    for frame in frames:
        if last is not None:
            changes.append(mean_abs_difference(last, frame))
        last = frame
    if not changes:
        raise ValueError("the change between frames needs at least two frames")
    return float(np.mean(changes))


def flicker(fused: Sequence[np.ndarray], streams: Sequence[Sequence[np.ndarray]]) -> float:
    """The fused video's mean absolute frame-to-frame change minus the mean of its input
    streams' (8-bit grey levels): > 0 where fusion adds temporal change of its own."""
    return mean_abs_change(fused) - float(np.mean([mean_abs_change(stream) for stream in streams]))


# --------------------------------------------------------------------------- files

@dataclass
class VideoSummary:
    output: Path
    frames: int
    fps: Fraction  # of the output
    seconds: float  # set-up, reading, fusing and writing
    first_frame_seconds: float  # until the first frame was written: set-up and a cold frame
    warm_frames: int
    flicker: float
    method: str
    backend: str | None
    preset: str | None  # None where nothing is optimised

    @property
    def steady_fps(self) -> float:
        """Frames a second after the first one (NaN for a single frame)."""
        after = self.seconds - self.first_frame_seconds
        return (self.frames - 1) / after if self.frames > 1 and after > 0 else float("nan")

    def summary(self, streams: int) -> str:
        how = run_description(self.method, self.preset, self.backend)
        if self.frames < 2 or not (math.isfinite(self.steady_fps) and math.isfinite(self.flicker)):
            # One frame has no rate after the first and no change between frames to measure.
            return (f"fused {self.frames} frame{'s' if self.frames != 1 else ''} of {streams} streams with {how} "
                    f"in {self.seconds:.1f} s (no frame rate or flicker to measure)")
        return (f"fused {self.frames} frames of {streams} streams with {how} in {self.seconds:.1f} s "
                f"({self.steady_fps:.2f} fps after the first frame, {self.warm_frames} warm-started), "
                f"flicker {self.flicker:+.2f} grey levels over the inputs'")


@dataclass(frozen=True)
class VideoPlan:
    """What a run will do, learned before any frame is fused."""

    inputs: tuple[StreamInfo, ...]
    output: Path
    fps: Fraction

    @property
    def frames(self) -> int:
        return self.inputs[0].frames


def plan_video(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, *, fps: float | None = None,
               quality: int | None = None, lossless: bool = False,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoPlan:
    """Probe every stream and check them against each other and the output: every problem
    that can be seen before fusing is a one-line SemfuseError here."""
    if len(inputs) < 2:
        raise SemfuseError(f"video fusion needs at least 2 streams, got {len(inputs)}")
    check_quality(quality, lossless)
    output = check_video_output(output, inputs)
    if fps is not None and output_kind(output) == "folder":
        raise SemfuseError(f"--fps {float(fps):g}: a frame-folder output (-o {output}, a path without a suffix) has no "
                           "frame rate; leave --fps out, or write a video (.mp4, .mkv, .mov)")
    infos = tuple(probe(path, max_pixels) for path in inputs)
    check_streams(infos)
    check_video_size(output, infos[0].width, infos[0].height)
    return VideoPlan(infos, output, stream_rate(infos, fps))


def fuse_video(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, method: FuseOptions | str = "max", *,
               warm: bool = True, steps: int | None = None, fps: float | None = None,
               quality: int | None = None, lossless: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
               progress: FrameProgress | None = None, executor: str = "threads", workers: int | None = None,
               ray: RaySettings | None = None, chunk_frames: int | None = None, **options) -> VideoSummary:
    """Fuse K >= 2 synchronised streams (video files or frame folders) into `output`: a
    video (.mp4, .mkv, .mov) at the inputs' frame rate, or a folder of PNG frames (a path
    without a suffix). `steps`: Adam steps of warm-started frames; with `warm=False`, of
    every frame (as `Fuser(steps=...)`). `method`: a FuseOptions, or a method's name with
    `options`, those of `Fuser`.

    `workers` workers of `executor` (executor_registry) fuse the frames. Those of this
    process (`threads`) take frames in turn, each warm from its own previous frame
    (default: `default_workers`; chunks need one): start-only fusers where `options` resolve
    to the start alone (`make_fuser`), else Fusers. The others (`ray`, with `ray`'s
    settings; `processes`) fuse chunks of `chunk_frames` frames (default: an even share per
    worker; default 1 worker), each holding a Fuser (engine/streams/video_ray.py).
    `progress(frames written, frames in all)` is called on the encoder's thread. The output
    appears only when every frame has been written."""
    started = time.perf_counter()
    if isinstance(method, FuseOptions):
        chosen = method
        method, options = chosen.method, {**chosen.given(), **options}
    runner = executor_named(executor)
    plan = plan_video(inputs, output, fps=fps, quality=quality, lossless=lossless, max_pixels=max_pixels)
    if not warm:
        options["steps"] = steps
    if chunk_frames is not None and chunk_frames < 1:
        raise SemfuseError(f"--chunk-frames must be 1 or more, got {chunk_frames}")
    if warm and steps is not None:
        check_applicable(get_method(method), ["steps"])  # the warm frames' steps: `cam` optimises nothing
        check_steps(steps)
    runner.check_available()  # a missing extra is one line before any work
    if runner.in_this_process:
        fuser = make_fuser(method, **options)  # checks every option before the work; the start alone needs no Fuser
    else:  # the workers hold Fusers (engine/streams/video_ray.py)
        from semfuse_rt.engine.fuse.fuser import Fuser

        fuser = Fuser(method, **options)  # the same checks
    if fuser.method.optimised:
        check_frames_fit(fuser, plan)
    if workers is not None:  # after every error, so that a warning is never a second line
        workers = runner.check_workers(workers)
    if ray is not None and ray.cpus_per_actor is None:
        ray = replace(ray, cpus_per_actor=1)  # a chunk's actor has one CPU, as a frame's worker has its share
    meter = FlickerMeter()
    written = _Written()

    def write(item: tuple[Sequence[np.ndarray], FrameResult]) -> None:
        frames, result = item
        writer.write(result.image)
        written.frames += 1
        if written.frames == 1:
            written.first_frame = time.perf_counter() - started
        meter.add(result.image, frames)
        written.warm += result.warm
        if progress:
            progress(written.frames, plan.frames)

    fusers = [fuser]
    # Leaving the block, the encoder's thread ends first (every frame written, or on an error
    # the rest dropped), then the output is committed or discarded.
    with open_writer(plan.output, plan.fps, quality=quality, lossless=lossless) as writer, \
            write_behind(write) as encoder:
        frame_sets = prefetch(read_synchronised(plan.inputs, max_pixels=max_pixels))
        restore_threads: Callable[[], None] | None = None
        results: Iterator[tuple[Sequence[np.ndarray], FrameResult]] = iter(())
        try:
            if runner.in_this_process:
                fusers = local_fusers(fuser, method, options, workers, chunked=chunk_frames is not None)
                restore_threads = _share_torch_threads(fusers)
                interleaved = InterleavedVideoFuser(fusers, warm=warm, steps=steps if warm else None,
                                                    restart_every=chunk_frames)
                results = interleaved.fuse_frames(frame_sets)
            else:
                count = workers or 1
                chunk = default_chunk_frames(plan.frames, count) if chunk_frames is None else chunk_frames
                work = VideoChunks(method, options, warm=warm, warm_steps=steps if warm else None)
                results = _chunk_results(runner(count, ray=ray), work, chunks(frame_sets, chunk))
            for item in results:
                encoder.put(item)
        finally:
            # Now, not when it is collected: the workers end (the frames in flight finish,
            # the rest are cancelled) before the fusers close.
            close_results = getattr(results, "close", None)
            if close_results is not None:
                close_results()
            frame_sets.close()
            for each in fusers:
                each.close()
            if restore_threads is not None:
                restore_threads()
    backend = None if isinstance(fuser, StartOnlyFuser) else fuser.backend
    return VideoSummary(plan.output, plan.frames, plan.fps, time.perf_counter() - started, written.first_frame,
                        written.warm, meter.flicker, fuser.method.name, backend, fuser.preset)


def _chunk_results(pool: Executor, work: VideoChunks, frame_chunks: Iterable[list[Sequence[np.ndarray]]]
                   ) -> Iterator[tuple[Sequence[np.ndarray], FrameResult]]:
    """(input frames, result) of every frame, in order, the chunks fused on `pool`'s workers."""
    first = 0
    with closing(pool.run(work, frame_chunks, in_order=True)) as done:
        for each in done:
            if not each.ok:
                raise SemfuseError(f"chunk at frame {first} failed on {pool.title}: {each.reason}")
            yield from chunk_frame_results(first, each.item, each.result)
            first += len(each.item)


@dataclass
class _Written:
    """What the encoder's thread has written so far."""

    frames: int = 0
    warm: int = 0
    first_frame: float = 0.0  # seconds from the start of the run until the first frame was written


def _share_torch_threads(fusers: Sequence[FrameFuser]) -> Callable[[], None] | None:
    """Several Fusers at once: torch's share of each frame (the rule's reduction, Adam) on the
    workers' share of the cores, as more OpenMP threads than cores stall one another. Returns
    what puts torch's thread count back; None where nothing was changed (start-only fusers run
    no torch, and need it not imported)."""
    if len(fusers) < 2 or any(isinstance(each, StartOnlyFuser) for each in fusers):
        return None
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(fusers)))
    return lambda: torch.set_num_threads(before)


def default_workers(fuser: FrameFuser) -> int:
    """Fusers that take frames in turn: one where a GPU is present (its queue keeps it
    busy), else up to two, each with its share of the cores (InterleavedVideoFuser). A
    start-only fuse runs on the CPU."""
    if not isinstance(fuser, StartOnlyFuser):
        import torch

        from semfuse_rt.engine.backends import needs_gpu

        if needs_gpu(fuser.backend) or torch.cuda.is_available():
            return 1
    return max(1, min(2, os.cpu_count() or 1))


def local_fusers(fuser: FrameFuser, method: str, options: dict, workers: int | None,
                 chunked: bool) -> list[FrameFuser]:
    """`fuser` alone, or `workers` open fusers of the same options, with the cores split
    between them (ONNX Runtime's threads; the other backends share the process's; start-only
    fusers share the start's own pool of threads)."""
    if chunked:
        if workers not in (None, 1):
            raise SemfuseError("--chunk-frames fuses each chunk in turn on one fuser here; leave out --workers")
        workers = 1
    count = default_workers(fuser) if workers is None else workers
    if isinstance(fuser, StartOnlyFuser):
        # Each its own: a fuser tiles a frame over the budget on a Fuser that it makes once.
        others: list[FrameFuser] = [each for each in (start_only_fuser(fuser.options) for _ in range(count - 1))
                                    if each is not None]
        return [fuser, *others]
    if count == 1:
        fuser.open()
        return [fuser]
    from semfuse_rt.engine.fuse.fuser import Fuser
    from semfuse_rt.engine.fuse.fuse_options import fuse_options
    from semfuse_rt.engine.streams.ray_session import pinned_options

    threads = max(1, (os.cpu_count() or 1) // count)
    fusers: list[FrameFuser] = []
    try:
        for _ in range(count):
            each = Fuser(pinned_options(fuse_options(method, **options), threads))
            fusers.append(each)
            each.open()
    except BaseException:
        for done in fusers:
            done.close()
        raise
    fuser.close()
    return fusers


def check_frames_fit(fuser: FrameFuser, plan: VideoPlan) -> None:
    """The per-image checks of a fuse, once for the whole stream (its frames share a size)."""
    from semfuse_rt.engine.limits.option_checks import check_image_fits

    first = plan.inputs[0]
    if not isinstance(fuser, StartOnlyFuser):  # a start alone has no network layer to fit
        check_image_fits(fuser.layer, fuser.mean_base, first.height, first.width)
    fuser.tiles(len(plan.inputs), first.height, first.width)
