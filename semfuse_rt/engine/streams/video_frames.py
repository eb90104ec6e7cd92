"""The per-frame fuser of a video: frame t of synchronised streams fused with one open
fuser, warm-started from frame t-1 (`VideoFuser`, `FrameResult`). Both the local run
(video_fusion.py) and the chunks on other workers (video_ray.py) fuse their frames with it.

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
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence, Union

import cv2
import numpy as np

from semfuse_rt.engine.fuse.start_only import StartOnlyFuser
from semfuse_rt.engine.limits.option_checks import check_steps
from semfuse_rt.engine.streams.video_defaults import DEFAULT_WARM_STEPS
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
    return float(np.mean([mean_abs_difference(a, b, buffers) for a, b in zip(previous, current)]))


def mean_abs_difference(a: np.ndarray, b: np.ndarray, buffers: Buffers | None = None) -> float:
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
