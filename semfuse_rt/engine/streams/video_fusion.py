"""Fusing synchronised frame streams with one open `Fuser`, frame t warm-started from t-1.

The image optimisation of the `fast` and `refined` presets is short and does not converge:
the result is the start (DT-CWT choose-max) plus what a few Adam steps add towards the
fused feature map. Consecutive frames show nearly the same scene, so what the steps added
on frame t-1 (its residual R = optimised - start) is most of what they would add on frame
t. The warm start lays it over frame t's own start image, moved with the camera,

    start_t = S_t + carry * shift(R_{t-1}),    R_t = optimised_t - S_t,

and runs fewer steps (`steps`) from there. S_t is the Fuser's initialisation of frame t
itself, so the detail of frame t's inputs is always its own and motion moves only the
small residual. `shift` is the global translation between the frames' input means (phase
correlation, whole pixels): without it a pan of one pixel a frame loses most of what the
residual carries. `carry` < 1 keeps R from growing frame after frame into a longer
optimisation than the cold fuse runs: by default it is matched to the schedules, so that
on a still scene R settles at what the cold schedule accumulates (Adam moves each pixel by
about the learning rate a step: 1 - sum of the warm rates / sum of the cold rates).

The first frame, frames after a scene cut (the inputs' mean absolute change above
`scene_cut` grey levels) and each chunk's first frame run cold, with the Fuser's own
schedule. Residuals stay on the runner's device; only the two-number shift comes from the
host, where the frames are decoded. Measured by benchmarks/bench_video.py.

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

import functools
import math
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence, Union

import cv2
import numpy as np

from semfuse_rt.engine.api import make_fuser
from semfuse_rt.engine.fuse.fusion_result import run_description
from semfuse_rt.engine.io.images import DEFAULT_MAX_PIXELS
from semfuse_rt.engine.fuse.methods import check_applicable, get_method
from semfuse_rt.engine.limits.option_checks import check_steps
from semfuse_rt.engine.limits.workers import check_workers
from semfuse_rt.engine.streams.video_defaults import DEFAULT_WARM_STEPS
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
from semfuse_rt.kernels.adam_scalars import AdamSchedule

if TYPE_CHECKING:  # torch comes with a Fuser: a start-only video imports neither
    import torch

    from semfuse_rt.engine.fuse.fuser import Fuser

# What fuses a video's frames: a Fuser, or where the options resolve to the start image alone
# the start-only fuse (engine/fuse/start_only.py), which needs no torch, backend or weights.
FrameFuser = Union["Fuser", StartOnlyFuser]

# Mean absolute change of the inputs between frames, in 8-bit grey levels, that marks a cut:
# far above camera motion (pans of a few pixels a frame change TNO scenes by 2-6).
SCENE_CUT = 30.0
# Phase correlation below this peak response finds no one translation (a zoom, a cut, noise):
# the residual is then carried unmoved.
MIN_SHIFT_RESPONSE = 0.05

# progress(frames done, frames in all)
FrameProgress = Callable[[int, int], None]


@dataclass
class FrameResult:
    index: int
    image: np.ndarray
    warm: bool
    seconds: float  # the frame's whole call: warm-start bookkeeping and the fuse
    stages: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)


def matched_carry(cold: AdamSchedule, warm: AdamSchedule) -> float:
    """The share of the residual to carry so that, on a still scene, it settles where the
    cold schedule ends: R = carry R + warm movement  with  R = cold movement."""
    moved = sum(warm.lr_at(t) for t in range(1, warm.steps + 1))
    cold_moved = sum(cold.lr_at(t) for t in range(1, cold.steps + 1))
    return float(min(max(1.0 - moved / cold_moved, 0.0), 1.0)) if cold_moved > 0 else 0.0


def global_shift(previous: np.ndarray, current: np.ndarray) -> tuple[int, int]:
    """(dy, dx) whole pixels that move `previous` onto `current` (2-D float32 images), by
    phase correlation; (0, 0) where no single translation explains the change."""
    # The window keeps the frame's edges, which do not wrap around, out of the estimate.
    (dx, dy), response = cv2.phaseCorrelate(previous, current, _hanning(previous.shape))
    if response < MIN_SHIFT_RESPONSE:
        return 0, 0
    return round(dy), round(dx)


@functools.lru_cache(maxsize=4)
def _hanning(shape: tuple[int, int]) -> np.ndarray:
    return cv2.createHanningWindow((shape[1], shape[0]), cv2.CV_32F)


def shifted(image: torch.Tensor, dy: int, dx: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) moved by (dy, dx) pixels; what moves in from outside is 0. Written into
    `out` (of image's shape, not image itself) where given, else `image` itself where it does
    not move."""
    height, width = image.shape[-2:]
    if out is None:
        if dy == 0 and dx == 0:
            return image
        out = image.new_zeros(image.shape)
    elif dy == 0 and dx == 0:
        return out.copy_(image)
    else:
        out.zero_()
    if abs(dy) >= height or abs(dx) >= width:
        return out
    out[..., max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        image[..., max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


class ResidualWarmStart:
    """The `WarmStart` of engine/fuse/fuser.py for a stream: frame t's own start plus the share
    `carry` of frame t-1's residual, moved by `shift`. Cold (no residual, the Fuser's
    schedule) until a frame has run."""

    def __init__(self, fuser: Fuser, steps: int, carry: float | None):
        self.fuser = fuser
        base = fuser.schedule
        self.warm_schedule = AdamSchedule(steps=steps, lr=base.lr, beta1=base.beta1, beta2=base.beta2,
                                          eps=base.eps, decay=base.decay)
        self.carry = matched_carry(base, self.warm_schedule) if carry is None else carry
        self.shift = (0, 0)  # (dy, dx) from the previous frame to the next, set by the caller
        self.residual: torch.Tensor | None = None
        self._start: torch.Tensor | None = None
        # The carried residual and the warm start, rewritten each frame: frame after frame
        # the same memory, as `residual` is. A runner copies its start before the loop
        # (FusionRunner.optimise), so the next frame may overwrite it.
        self._moved: torch.Tensor | None = None

    @property
    def is_warm(self) -> bool:
        return self.residual is not None

    @property
    def schedule(self) -> AdamSchedule | None:
        return self.warm_schedule if self.is_warm else None

    def reset(self) -> None:
        self.residual = None

    def start(self, pixels: torch.Tensor) -> torch.Tensor:
        start = self._start = self.fuser.active_runner.start(pixels, self.fuser.init)
        if self.residual is None or self.residual.shape != start.shape:
            self.residual = None
            return start
        if self._moved is None or self._moved.shape != start.shape:
            self._moved = self.residual.new_empty(start.shape)
        # start + carry * shift(R), in that order of operations, in place in the buffer.
        moved = shifted(self.residual, *self.shift, out=self._moved).mul_(self.carry)
        return moved.add_(start)

    def optimised(self, image: torch.Tensor) -> None:
        start = self._start
        assert start is not None, "a fuse calls start() before optimised()"
        # Into the residual's own buffer, never the image's: a runner may hand back a buffer
        # it reuses on the next call.
        image = image.to(start.device)
        if self.residual is None or self.residual.shape != start.shape:
            self.residual = image - start
        else:
            self.residual.copy_(image).sub_(start)


class Buffers:
    """Arrays kept from frame to frame, one per use, shape and dtype: every frame of a stream
    (its frames share a size) is worked on in the same memory. Without one, each call
    allocates its own."""

    def __init__(self) -> None:
        self._arrays: dict[tuple, np.ndarray] = {}

    def get(self, use: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        key: tuple[str, tuple[int, ...], np.dtype] = (use, shape, np.dtype(dtype))
        array = self._arrays.get(key)
        if array is None:
            array = self._arrays[key] = np.empty(shape, dtype)
        return array


def _buffer(buffers: Buffers | None, use: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    return np.empty(shape, dtype) if buffers is None else buffers.get(use, shape, dtype)


def _grey(frames: Sequence[np.ndarray], buffers: Buffers | None = None, use: str = "grey") -> np.ndarray:
    """The inputs' mean as one float32 plane in 8-bit levels (what the shift is found on),
    in the buffer for `use`."""
    shape = frames[0].shape[:2]
    total = _grey_plane(frames[0], _buffer(buffers, use, shape))
    for frame in frames[1:]:
        total += _grey_plane(frame, _buffer(buffers, "grey plane", shape))
    total /= len(frames)
    return total


def _grey_plane(frame: np.ndarray, out: np.ndarray) -> np.ndarray:
    # The channels' float32 mean, as frame.astype(np.float32).mean(axis=2) gives it (the sums
    # of whole numbers are exact either way), without the float32 copy of the frame.
    if frame.ndim == 3:
        np.mean(frame, axis=2, dtype=np.float32, out=out)
    else:
        np.copyto(out, frame)
    if frame.dtype == np.uint16:
        out /= 257
    return out


def scene_change(previous: Sequence[np.ndarray], current: Sequence[np.ndarray],
                 buffers: Buffers | None = None) -> float:
    """Mean absolute change between two frame sets, in 8-bit grey levels (over all inputs)."""
    return float(np.mean([_mean_abs_difference(a, b, buffers) for a, b in zip(previous, current)]))


def _mean_abs_difference(a: np.ndarray, b: np.ndarray, buffers: Buffers | None = None) -> float:
    if a.dtype == np.uint8 and b.dtype == np.uint8:
        # In uint8, without a widened copy of either.
        difference: np.ndarray = cv2.absdiff(a, b, dst=_buffer(buffers, "difference", a.shape, np.uint8))
        return float(difference.mean())
    scale = 1 / 257 if a.dtype == np.uint16 else 1.0
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) * scale


class VideoFuser:
    """Fuses the frame sets of synchronised streams in order with one open `Fuser`.

        with Fuser("max") as fuser:
            video = VideoFuser(fuser)
            for frames in frame_sets:           # [frame of stream 1, frame of stream 2, ...]
                result = video(frames)          # FrameResult

    `warm`: frames after the first start from the previous frame's residual and run `steps`
    Adam steps (default DEFAULT_WARM_STEPS); cold frames run the Fuser's own schedule.
    `carry`: the share of the residual carried (default: matched_carry). `follow_motion`:
    move the residual with the camera (global_shift). `restart_every`: run a frame cold
    every so many frames (a distributed run's chunks start cold). Methods without
    optimisation (`cam`), fuses without steps (a StartOnlyFuser's) and tiled frames always
    run cold. Warm frames work in the same buffers frame after frame."""

    def __init__(self, fuser: FrameFuser, *, warm: bool = True, steps: int | None = None,
                 carry: float | None = None, follow_motion: bool = True,
                 scene_cut: float | None = SCENE_CUT, restart_every: int | None = None):
        if carry is not None and not 0 <= carry <= 1:
            raise SemfuseError(f"the residual carried between frames must be within 0..1, got {carry}")
        if restart_every is not None and restart_every < 1:
            raise SemfuseError(f"chunks need at least one frame, got {restart_every}")
        self.fuser = fuser
        # A fuse without steps (the start alone) has no residual to carry between frames.
        optimises = (not isinstance(fuser, StartOnlyFuser) and fuser.method.optimised
                     and fuser.schedule.steps > 0)
        if warm and steps is not None and fuser.method.optimised and not optimises:
            raise SemfuseError(f"--steps sets the warm frames' steps, but preset {fuser.preset} runs none; "
                               "give --cold --steps N to optimise every frame, or a preset with steps")
        self.warm = warm and optimises
        self.steps = check_steps(DEFAULT_WARM_STEPS if steps is None else steps)
        self.carry = carry
        self.follow_motion = follow_motion
        self.scene_cut = scene_cut
        self.restart_every = restart_every
        self.index = 0
        self._previous: Sequence[np.ndarray] | None = None
        self._previous_grey: np.ndarray | None = None
        self._warm_start: ResidualWarmStart | None = None
        self._whole: dict[tuple, bool] = {}
        self._buffers = Buffers()

    def reset(self) -> None:
        """The next frame runs cold."""
        self._previous = self._previous_grey = None
        if self._warm_start is not None:
            self._warm_start.reset()

    def _whole_frames(self, frames: Sequence[np.ndarray]) -> bool:
        height, width = frames[0].shape[:2]
        key = (len(frames), height, width)
        if key not in self._whole:
            self._whole[key] = self.fuser.tiles(len(frames), height, width) is None
        return self._whole[key]

    def __call__(self, frames: Sequence[np.ndarray]) -> FrameResult:
        started = time.perf_counter()
        index = self.index
        self.index += 1
        fuser = self.fuser
        if isinstance(fuser, StartOnlyFuser) or not (self.warm and self._whole_frames(frames)):
            result = fuser(frames)
            return FrameResult(index, result.image, False, time.perf_counter() - started, result.stages,
                               result.losses)
        fuser.open()
        if self._warm_start is None:
            self._warm_start = ResidualWarmStart(fuser, self.steps, self.carry)
        if self.restart_every and index % self.restart_every == 0:
            self.reset()
        if self._previous is not None and self.scene_cut is not None \
                and scene_change(self._previous, frames, self._buffers) > self.scene_cut:
            self.reset()
        # Two planes in turn: this frame's, and the previous one's, which the shift is found from.
        grey = _grey(frames, self._buffers, f"grey {index % 2}") if self.follow_motion else None
        if self._warm_start.is_warm and grey is not None and self._previous_grey is not None:
            self._warm_start.shift = global_shift(self._previous_grey, grey)
        else:
            self._warm_start.shift = (0, 0)
        warm = self._warm_start.is_warm
        result = fuser(frames, warm_start=self._warm_start)
        self._previous, self._previous_grey = frames, grey
        return FrameResult(index, result.image, warm, time.perf_counter() - started, result.stages, result.losses)

    def fuse_frames(self, frame_sets: Iterable[Sequence[np.ndarray]]) -> Iterator[FrameResult]:
        for frames in frame_sets:
            yield self(frames)


class InterleavedVideoFuser:
    """Frames taken in turn by several `VideoFuser`s, each with its own fuser and thread:
    worker w fuses frames w, w + N, w + 2N, ..., warm-started from its own previous frame.
    On a CPU, ONNX Runtime's sessions gain little from a second thread on one frame at a
    time (about 12% on 2 cores), so two one-thread workers nearly double the frame rate.
    Start-only frames split their own work over the cores too, yet two frames in flight
    still gained a few percent over one on the 2-core VM. Results come back in frame order."""

    def __init__(self, fusers: Sequence[FrameFuser], **video_options):
        if not fusers:
            raise SemfuseError("interleaved fusion needs at least one fuser")
        self.workers = [VideoFuser(fuser, **video_options) for fuser in fusers]

    def fuse_frames(self, frame_sets: Iterable[Sequence[np.ndarray]]
                    ) -> Iterator[tuple[Sequence[np.ndarray], FrameResult]]:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        # One thread per worker: a worker's frames run in order, so its warm start holds.
        threads = [ThreadPoolExecutor(1, thread_name_prefix=f"semfuse-video-{w}") for w in range(len(self.workers))]
        pending: deque = deque()
        try:
            for index, frames in enumerate(frame_sets):
                worker = index % len(self.workers)
                pending.append((index, frames, threads[worker].submit(self.workers[worker], frames)))
                if len(pending) > len(self.workers):
                    yield self._result(pending.popleft())
            while pending:
                yield self._result(pending.popleft())
        finally:
            for _, _, future in pending:
                future.cancel()
            for executor in threads:
                executor.shutdown(wait=True)

    @staticmethod
    def _result(entry) -> tuple[Sequence[np.ndarray], FrameResult]:
        index, frames, future = entry
        result = future.result()
        result.index = index
        return frames, result


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
            self._fused.append(_mean_abs_difference(last_fused, fused, self._buffers))
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
            changes.append(_mean_abs_difference(last, frame))
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


def fuse_video(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, method: str = "max", *,
               warm: bool = True, steps: int | None = None, fps: float | None = None,
               quality: int | None = None, lossless: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
               progress: FrameProgress | None = None, ray: bool = False, ray_address: str | None = None,
               ray_actors: int = 1, num_gpus_per_actor: float = 0.0, ray_timeout_s: float | None = None,
               chunk_frames: int | None = None,
               workers: int | None = None, **options) -> VideoSummary:
    """Fuse K >= 2 synchronised streams (video files or frame folders) into `output`: a
    video (.mp4, .mkv, .mov) at the inputs' frame rate, or a folder of PNG frames (a path
    without a suffix). `steps`: Adam steps of warm-started frames; with `warm=False`, of
    every frame (as `Fuser(steps=...)`). `options`: those of `Fuser`. `ray`: fuse chunks of
    `chunk_frames` frames (default: an even share per actor) on `ray_actors` Ray actors
    (engine/streams/video_ray.py; `ray_timeout_s` bounds the connection to `ray_address`); else
    `workers` fusers on this machine take frames in turn (default: `default_workers`;
    chunks need one): start-only fusers where `options` resolve to the start alone
    (`make_fuser`), else Fusers. `progress(frames written, frames in all)` is called on the
    encoder's thread. The output appears only when every frame has been written."""
    started = time.perf_counter()
    plan = plan_video(inputs, output, fps=fps, quality=quality, lossless=lossless, max_pixels=max_pixels)
    if not warm:
        options["steps"] = steps
    if ray and workers is not None:
        raise SemfuseError("--workers runs fusers on this machine; with --ray give --ray-actors")
    if chunk_frames is not None and chunk_frames < 1:
        raise SemfuseError(f"--chunk-frames must be 1 or more, got {chunk_frames}")
    if warm and steps is not None:
        check_applicable(get_method(method), ["steps"])  # the warm frames' steps: `cam` optimises nothing
        check_steps(steps)
    if ray:
        from semfuse_rt.engine.streams.ray_session import import_ray

        import_ray()  # a missing extra is one line before any work
    if ray:  # the actors hold Fusers (engine/streams/video_ray.py)
        from semfuse_rt.engine.fuse.fuser import Fuser

        fuser: FrameFuser = Fuser(method, **options)  # checks every option before the work
    else:
        fuser = make_fuser(method, **options)  # the same checks; the start alone needs no Fuser
    if fuser.method.optimised:
        check_frames_fit(fuser, plan)
    if workers is not None:  # after every error, so that a warning is never a second line
        workers = check_workers(workers)
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
            if ray:
                from semfuse_rt.engine.streams.video_ray import fuse_chunks_on_ray

                results = fuse_chunks_on_ray(frame_sets, plan.frames, method, warm=warm,
                                             warm_steps=steps if warm else None, chunk_frames=chunk_frames,
                                             address=ray_address, actors=ray_actors,
                                             num_gpus_per_actor=num_gpus_per_actor,
                                             connect_timeout_s=ray_timeout_s, **options)
            else:
                fusers = local_fusers(fuser, method, options, workers, chunked=chunk_frames is not None)
                restore_threads = _share_torch_threads(fusers)
                interleaved = InterleavedVideoFuser(fusers, warm=warm, steps=steps if warm else None,
                                                    restart_every=chunk_frames)
                results = interleaved.fuse_frames(frame_sets)
            for item in results:
                encoder.put(item)
        finally:
            # Now, not when it is collected: the workers' threads end (the frames in flight
            # finish, the rest are cancelled) before the fusers close.
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

        if fuser.backend in ("trt", "cuda") or torch.cuda.is_available():
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
        others: list[FrameFuser] = [each for each in (start_only_fuser(method, options) for _ in range(count - 1))
                                    if each is not None]
        return [fuser, *others]
    if count == 1:
        fuser.open()
        return [fuser]
    from semfuse_rt.engine.fuse.fuser import Fuser
    from semfuse_rt.engine.streams.ray_session import pinned_options

    threads = max(1, (os.cpu_count() or 1) // count)
    fusers: list[FrameFuser] = []
    try:
        for _ in range(count):
            each = Fuser(method, **pinned_options(method, options, threads))
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
