"""A synthetic multi-focus pair, for timings and exports that need no dataset."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from semfuse_rt.engine.io.images import save_image

SYNTHETIC_SIDE = 520  # the synthetic pair's, where no images are given


def synthetic_pair(folder: Path, size: int = SYNTHETIC_SIDE) -> list[Path]:
    """A multi-focus-like colour pair (each half sharp in one image), written as PNG: the
    pipeline's timing needs no dataset."""
    from semfuse_rt.gaussian_blur import Border, opencv_blur

    generator = np.random.default_rng(size)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    scene = np.stack([128 + 60 * np.sin(x / 9) * np.cos(y / 13), 128 + 50 * np.sin((x + y) / 17),
                      128 + 40 * np.cos(x / 23)], axis=2) + generator.normal(0, 20, (size, size, 3))
    scene = np.clip(scene, 0, 255).astype(np.float32)
    blurred = opencv_blur(scene, 3.0, Border.REFLECT_101)  # cv2.GaussianBlur's default border
    left = np.zeros((size, size, 1), np.float32)
    left[:, : size // 2] = 1
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, sharp in (("near.png", left), ("far.png", 1 - left)):
        image = np.rint(sharp * scene + (1 - sharp) * blurred).astype(np.uint8)
        paths.append(save_image(folder / name, image))
    return paths
