"""Video fusion on workers apart from this process (Ray actors, or processes): the frames cut
into chunks, each chunk fused by a worker that holds one `Fuser`, warm-started within the
chunk and cold at its first frame.

The driver decodes the streams, ships each chunk's frames to a worker (so Ray's nodes need
no access to the inputs), takes the fused chunks back in frame order and writes them itself
(video_fusion.fuse_video): the output is the same as a local run with the same chunks
(`fuse_video(chunk_frames=...)`), and appears only once every frame is written. A few chunks
per worker are in flight at a time (the executor's window), so memory stays bounded on long
videos.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Iterator, Sequence

import numpy as np

from semfuse_rt.engine.streams.ray_session import FuserActor
from semfuse_rt.engine.streams.video_frames import FrameResult, VideoFuser
from semfuse_rt.errors import SemfuseError

__all__ = ["chunk_ranges", "default_chunk_frames", "chunks", "VideoChunks"]


def chunk_ranges(frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[start, stop) of each chunk of `chunk_frames` frames (the last may be shorter)."""
    if chunk_frames < 1:
        raise SemfuseError(f"--chunk-frames must be 1 or more, got {chunk_frames}")
    return [(start, min(start + chunk_frames, frames)) for start in range(0, frames, chunk_frames)]


def default_chunk_frames(frames: int, actors: int) -> int:
    """An even share per actor: the fewest chunks, so the fewest cold frames."""
    return max(1, math.ceil(frames / actors))


def chunks(frame_sets: Iterable[Sequence[np.ndarray]], chunk_frames: int) -> Iterator[list[Sequence[np.ndarray]]]:
    """The frame sets in lists of `chunk_frames` (the last may be shorter), read as they are asked for."""
    source = iter(frame_sets)
    while chunk := list(islice(source, chunk_frames)):
        yield chunk


@dataclass(frozen=True)
class VideoChunks:
    """The Work of a video's chunks: each worker holds one Fuser of `method` and `options` (its
    `steps` those of the cold frames) and fuses a chunk with a VideoFuser of its own (`warm`,
    `warm_steps` those of the warm frames), the chunk's first frame cold; the result is
    (image, warm-started, seconds) of each frame."""

    method: str
    options: dict
    warm: bool = True
    warm_steps: int | None = None
    name: str = "video"

    def start(self, slot: int, threads: int | None) -> _ChunkHandler:
        return _ChunkHandler(FuserActor(self.method, threads=threads, **self.options), self.warm, self.warm_steps)


@dataclass
class _ChunkHandler:
    actor: FuserActor
    warm: bool
    warm_steps: int | None

    def ready(self) -> bool:
        return self.actor.ready()

    def run(self, frame_sets: Sequence[Sequence[np.ndarray]]) -> list[tuple[np.ndarray, bool, float]]:
        video = VideoFuser(self.actor.fuser, warm=self.warm, steps=self.warm_steps)
        return [(result.image, result.warm, result.seconds) for result in video.fuse_frames(frame_sets)]

    def close(self) -> None:
        self.actor.close()


def chunk_frame_results(first: int, frame_sets: Sequence[Sequence[np.ndarray]],
                        fused: Sequence[tuple[np.ndarray, bool, float]]
                        ) -> Iterator[tuple[Sequence[np.ndarray], FrameResult]]:
    """(input frames, result) of each frame of a chunk fused from frame `first` on."""
    for offset, (inputs, (image, was_warm, seconds)) in enumerate(zip(frame_sets, fused)):
        yield inputs, FrameResult(first + offset, image, was_warm, seconds)
