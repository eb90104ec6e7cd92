"""Synthetic synchronised streams: a virtual camera panning and zooming over a registered
infrared-visible pair, so that every stream sees the same motion and stays registered.

    python benchmarks/make_motion.py [--pair Octec] [--frames 60] [--size 640x512] [--fps 25]
                                     [--out benchmarks/motion]

Writes OUT/NAME_IR.mp4 and OUT/NAME_Vis.mp4 (H.264, lossless: grey frames decode bit-exact)
and the same frames as folders OUT/NAME_IR/ and OUT/NAME_Vis/ (PNG). The camera follows a
smooth path: a horizontal pan there and back (peak speed `--pan` output pixels a frame),
a slow vertical drift, and a zoom in from `--zoom-from` to `--zoom-to` times the scale that
just fills the frame; frame t is the source warped by that similarity (bicubic).
"""
from __future__ import annotations

import argparse
import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.streams.video_io import FrameFolderWriter, VideoWriter

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "infrared_visible"


def camera_path(frames: int, source_size: tuple[int, int], size: tuple[int, int], *, pan: float,
                zoom_from: float, zoom_to: float) -> list[np.ndarray]:
    """2x3 affine maps (output pixel -> source pixel) of each frame. The zoom is relative to
    the scale at which the output just fits inside the source; the pan stays inside it."""
    (src_w, src_h), (out_w, out_h) = source_size, size
    fill = max(out_w / src_w, out_h / src_h)  # output pixels per source pixel that fill the frame
    maps = []
    for t in range(frames):
        u = t / max(frames - 1, 1)
        zoom = fill * (zoom_from + (zoom_to - zoom_from) * (1 - math.cos(math.pi * u)) / 2)
        # Room to move, in source pixels, at this zoom.
        room_x = (src_w - out_w / zoom) / 2
        room_y = (src_h - out_h / zoom) / 2
        # sin path: peak speed 2*pi*amplitude/frames source px a frame = `pan` output px.
        amplitude = min(room_x, pan * frames / (2 * math.pi) / zoom)
        cx = src_w / 2 + amplitude * math.sin(2 * math.pi * u)
        cy = src_h / 2 + room_y * 0.5 * (2 * u - 1)
        scale = 1 / zoom
        maps.append(np.array([[scale, 0, cx - scale * out_w / 2],
                              [0, scale, cy - scale * out_h / 2]], np.float64))
    return maps


def warp(image: np.ndarray, affine: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(image, affine, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="Octec", help="NAME of NAME_IR.png / NAME_Vis.png")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="640x512", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--pan", type=float, default=4.0, help="peak pan speed, output pixels a frame")
    parser.add_argument("--zoom-from", type=float, default=1.05)
    parser.add_argument("--zoom-to", type=float, default=1.4)
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "motion")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    sources = {band: load_image(args.datasets / f"{args.pair}_{band}.png") for band in ("IR", "Vis")}
    height, width = next(iter(sources.values())).shape[:2]
    maps = camera_path(args.frames, (width, height), size, pan=args.pan, zoom_from=args.zoom_from,
                       zoom_to=args.zoom_to)
    fps = Fraction(args.fps).limit_denominator(1001)
    for band, image in sources.items():
        name = f"{args.pair}_{band}"
        folder = args.out / name
        if folder.exists():
            for old in folder.iterdir():
                old.unlink()
        with VideoWriter(args.out / f"{name}.mp4", fps, lossless=True) as video, \
                FrameFolderWriter(folder, fps) as frames:
            for affine in maps:
                frame = warp(image, affine, size)
                video.write(frame)
                frames.write(frame)
        print(f"{args.out / name}.mp4 and {folder}/: {args.frames} frames of {size[0]}x{size[1]} at {float(fps):g} fps")


if __name__ == "__main__":
    main()
