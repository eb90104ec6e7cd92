"""Video fusion in one run: the warm start against the cold default fuse of every frame and
against per-frame DT-CWT choose-max, on synthetic camera motion over a TNO pair.

    python benchmarks/make_motion.py                 # benchmarks/out/motion/Octec_{IR,Vis}/
    python benchmarks/bench_video.py [--motion benchmarks/out/motion] [--pair Octec]
                                     [--frames 60] [--steps 1,2,3] [--backend ort]

Every run fuses the same decoded frames (decoding and encoding are not timed); the
single-Fuser runs take each frame in turn, so that a shared machine's load falls on all
alike. Per run: frames a second (1 / the median time of a frame, after the first two; for
the interleaved workers of fuse-video's default, frames out over the wall time after each
worker's first frame, warm and cold one after the other), Q^AB/F of each frame and its
difference from the cold fuse of that frame (mean and worst), and flicker (the fused
stream's mean absolute frame-to-frame change minus the inputs', 8-bit grey levels).
Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from semfuse_rt.engine.evaluation.baselines import fuse_baseline
from semfuse_rt.engine.fuse.fuse_options import FuseOptions
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.metrics.metrics import qabf
from semfuse_rt.engine.fuse.presets import DEFAULT_PRESET, PRESETS
from semfuse_rt.engine.streams.ray_session import pinned_options
from semfuse_rt.engine.streams.video_fusion import InterleavedVideoFuser, VideoFuser, flicker
from semfuse_rt.engine.streams.video_io import probe, read_synchronised

WARM_UP = 2


def steady_fps(seconds: list[float]) -> float:
    return 1.0 / statistics.median(seconds[WARM_UP:] or seconds)


def row(name: str, fps: float, images, frame_sets, cold_quality, streams) -> str:
    quality = np.array([qabf(frames, image) for frames, image in zip(frame_sets, images)])
    difference = quality - cold_quality if cold_quality is not None else np.zeros_like(quality)
    return (f"| {name} | {fps:.2f} | {quality.mean():.4f} | {difference.mean():+.4f} | {difference.min():+.4f} "
            f"| {flicker(images, streams):+.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--motion", type=Path, default=Path(__file__).resolve().parent / "out" / "motion")
    parser.add_argument("--pair", default="Octec")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--steps", default="1,2,3", help="warm steps to measure, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="interleaved workers of the last run")
    parser.add_argument("--backend", default="ort")
    args = parser.parse_args()

    infos = [probe(args.motion / f"{args.pair}_{band}") for band in ("IR", "Vis")]
    frame_sets = list(read_synchronised(infos, 0, args.frames))
    streams = [[frames[k] for frames in frame_sets] for k in range(len(infos))]
    height, width = frame_sets[0][0].shape[:2]
    print(f"{len(frame_sets)} frames of {width}x{height}, {args.pair} pan + zoom; {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores, backend {args.backend}\n")
    print("| run | fps | Q^AB/F | vs cold, mean | vs cold, worst | flicker |")
    print("| --- | --- | --- | --- | --- | --- |")

    # Every configuration has its own Fuser and fuses frame t in turn with the others, so
    # that the load of a shared machine falls on all of them alike.
    warm_steps = [int(s) for s in args.steps.split(",")]
    names = [f"cold default ({DEFAULT_PRESET}, {PRESETS[DEFAULT_PRESET].steps} steps)",
             *(f"warm, {n} steps" for n in warm_steps),
             "warm, 2 steps, residual not moved"]
    fusers = [Fuser("max", backend=args.backend) for _ in names]
    try:
        for each in fusers:
            each(frame_sets[0])  # sessions and graphs ready before anything is timed
        runs = [None, *(VideoFuser(f, steps=n) for f, n in zip(fusers[1:], warm_steps)),
                VideoFuser(fusers[-1], follow_motion=False)]
        seconds = {name: [] for name in [*names, "per-frame DT-CWT choose-max"]}
        images = {name: [] for name in seconds}
        for frames in frame_sets:
            for name, fuser, run in zip(names, fusers, runs):
                started = time.perf_counter()
                image = fuser(frames).image if run is None else run(frames).image
                seconds[name].append(time.perf_counter() - started)
                images[name].append(image)
            started = time.perf_counter()
            images["per-frame DT-CWT choose-max"].append(fuse_baseline(frames, "dtcwt"))
            seconds["per-frame DT-CWT choose-max"].append(time.perf_counter() - started)
    finally:
        for each in fusers:
            each.close()
    cold_quality = np.array([qabf(frames, image) for frames, image in zip(frame_sets, images[names[0]])])
    for name in seconds:
        print(row(name, steady_fps(seconds[name]), images[name], frame_sets, cold_quality, streams), flush=True)

    # fuse-video's default on this machine: interleaved one-thread workers, warm against cold.
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    torch.set_num_threads(threads)  # as fuse_video does for its workers
    for warm in (False, True):
        fusers = [Fuser(pinned_options(FuseOptions.from_keywords(method="max", backend=args.backend), threads))
                  for _ in range(args.workers)]
        try:
            for each in fusers:
                each(frame_sets[0])
            out_times, fused = [], []
            started = time.perf_counter()
            for _, result in InterleavedVideoFuser(fusers, warm=warm).fuse_frames(frame_sets):
                out_times.append(time.perf_counter() - started)
                fused.append(result.image)
        finally:
            for each in fusers:
                each.close()
        first = args.workers  # every worker's first frame (cold) is out
        fps = (len(out_times) - 1 - first) / (out_times[-1] - out_times[first])
        how = "warm, 2 steps" if warm else "cold default"
        print(row(f"{how}, {args.workers} workers x {threads} thread(s)", fps, fused, frame_sets, cold_quality,
                  streams), flush=True)
    print(f"\ninputs' own mean absolute frame-to-frame change: "
          f"{np.mean([np.abs(np.diff(np.stack(s).astype(np.float32), axis=0)).mean() for s in streams]):.3f}")


if __name__ == "__main__":
    main()
