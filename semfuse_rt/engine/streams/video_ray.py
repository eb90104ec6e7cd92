"""Video fusion on Ray: the frames cut into chunks, each chunk fused by an actor that holds
one `Fuser`, warm-started within the chunk and cold at its first frame.

The driver decodes the streams, ships each chunk's frames to an actor (so the nodes need no
access to the inputs), takes the fused chunks back in frame order and writes them itself:
the output is the same as a local run with the same chunks (`fuse_video(chunk_frames=...)`),
and appears only once every frame is written. A few chunks per actor are in flight at a time,
so memory stays bounded on long videos. Ctrl-C is seen within a poll of the wait for a chunk
(ray_session.wait_for) and stops the run as it stops a local one.
"""
from __future__ import annotations

import math
from collections import deque
from itertools import islice
from typing import Iterable, Iterator, Sequence

import numpy as np

from semfuse_rt.engine.streams.ray_session import (FuserActor, ray_failure, ray_session, signals_unwrapped,
                                           start_fuser_actors, wait_for)
from semfuse_rt.engine.streams.video_fusion import FrameResult, VideoFuser
from semfuse_rt.errors import SemfuseError

CHUNKS_IN_FLIGHT_PER_ACTOR = 2


def chunk_ranges(frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[start, stop) of each chunk of `chunk_frames` frames (the last may be shorter)."""
    if chunk_frames < 1:
        raise SemfuseError(f"--chunk-frames must be 1 or more, got {chunk_frames}")
    return [(start, min(start + chunk_frames, frames)) for start in range(0, frames, chunk_frames)]


def default_chunk_frames(frames: int, actors: int) -> int:
    """An even share per actor: the fewest chunks, so the fewest cold frames."""
    return max(1, math.ceil(frames / actors))


class VideoChunkActor(FuserActor):
    """A `FuserActor` that also fuses video chunks."""

    def fuse_chunk(self, frame_sets: Sequence[Sequence[np.ndarray]], warm: bool = True,
                   warm_steps: int | None = None) -> list[tuple[np.ndarray, bool, float]]:
        """(image, warm-started, seconds) of each frame set, the first frame cold."""
        video = VideoFuser(self.fuser, warm=warm, steps=warm_steps)
        return [(result.image, result.warm, result.seconds) for result in video.fuse_frames(frame_sets)]


def fuse_chunks_on_ray(frame_sets: Iterable[Sequence[np.ndarray]], frames: int, method: str = "max", *,
                       warm: bool = True, warm_steps: int | None = None, chunk_frames: int | None = None,
                       address: str | None = None, actors: int = 1, num_gpus_per_actor: float = 0.0,
                       connect_timeout_s: float | None = None,
                       **options) -> Iterator[tuple[Sequence[np.ndarray], FrameResult]]:
    """(input frames, result) of every frame set, in order, fused in chunks on `actors` Ray
    actors (on the cluster at `address`, or a local instance; `connect_timeout_s` as in
    ray_session). `warm_steps`: those of VideoFuser's warm frames; `options`: those of
    `Fuser`, its `steps` those of the cold frames."""
    if actors < 1:
        raise SemfuseError(f"--ray-actors must be 1 or more, got {actors}")
    chunk = default_chunk_frames(frames, actors) if chunk_frames is None else chunk_frames
    chunk_ranges(frames, chunk)  # checks the size
    with ray_session(address, connect_timeout_s=connect_timeout_s) as ray:
        pool = start_fuser_actors(actors, method, num_gpus=num_gpus_per_actor, cls=VideoChunkActor, **options)
        try:
            pending: deque = deque()
            source = iter(frame_sets)
            start, number = 0, 0
            while True:
                while len(pending) < CHUNKS_IN_FLIGHT_PER_ACTOR * actors:
                    chunk_sets = list(islice(source, chunk))
                    if not chunk_sets:
                        break
                    actor = pool[number % actors]
                    pending.append((start, chunk_sets, actor.fuse_chunk.remote(chunk_sets, warm, warm_steps)))
                    start, number = start + len(chunk_sets), number + 1
                if not pending:
                    return
                first, chunk_sets, reference = pending.popleft()
                try:
                    wait_for([reference])
                    with signals_unwrapped():
                        fused = ray.get(reference)
                except Exception as error:  # noqa: BLE001 - Ray wraps the actor's own error
                    raise SemfuseError(f"chunk at frame {first} failed on Ray: {ray_failure(error)}") from None
                for offset, (inputs, (image, was_warm, seconds)) in enumerate(zip(chunk_sets, fused)):
                    yield inputs, FrameResult(first + offset, image, was_warm, seconds)
        finally:
            for actor in pool:
                ray.kill(actor)
