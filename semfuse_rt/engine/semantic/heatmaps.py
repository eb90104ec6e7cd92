"""Pictures of class activation maps: a map blended over its image, and the overlays that
`fuse --save-cams DIR` writes, one per input, checked before any work."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from semfuse_rt.cache import StagedWrites
from semfuse_rt.engine.io.images import check_writable_folder, encoded_image, same_file
from semfuse_rt.errors import SemfuseError

OVERLAY_ALPHA = 0.5
OVERLAY_SUFFIX = "_cam"


def overlay_heatmap(image: np.ndarray, cam_map: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """8-bit RGB: the image (grey or colour, 8/16-bit) blended with the map in the jet colours."""
    display = image.astype(np.float64) / (257.0 if image.dtype == np.uint16 else 1.0)
    if display.ndim == 2:
        display = np.repeat(display[:, :, None], 3, axis=2)
    levels = np.rint(np.clip(cam_map, 0.0, 1.0) * 255.0).astype(np.uint8)
    heat = cv2.applyColorMap(levels, cv2.COLORMAP_JET)[:, :, ::-1].astype(np.float64)  # BGR -> RGB
    return np.clip(np.rint((1.0 - alpha) * display + alpha * heat), 0, 255).astype(np.uint8)


def cam_overlay_paths(directory: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """`DIR/<stem>_cam.png` for each input. Inputs that share a stem (ir/scene.png and
    vis/scene.png) get `<stem>_cam-<N>.png`, N their position, so no overlay replaces another;
    stems are compared without case, as a case-blind file system would."""
    stems = [Path(name).stem for name in inputs]
    uses = Counter(stem.casefold() for stem in stems)
    return [Path(directory) / (f"{stem}{OVERLAY_SUFFIX}-{index}.png" if uses[stem.casefold()] > 1
                               else f"{stem}{OVERLAY_SUFFIX}.png")
            for index, stem in enumerate(stems, start=1)]


def check_cam_overlays(directory: str | os.PathLike, inputs: Sequence[str | os.PathLike],
                       output: str | os.PathLike) -> list[Path]:
    """Where each input's overlay will go, checked before any work: the folder exists or can
    be made, and can be written; no overlay would replace an input, the output or a folder.
    Such a clash is refused, not renamed, as an output that is an input is."""
    directory = Path(directory)
    check_writable_folder(directory, "--save-cams")
    paths = cam_overlay_paths(directory, inputs)
    for index, (name, path) in enumerate(zip(inputs, paths), start=1):
        clash = f"--save-cams {directory}: the CAM overlay of input {index} ({name}) would be {path}"
        for other, source in enumerate(inputs, start=1):
            if same_file(path, source):
                raise SemfuseError(f"{clash}, which is input {other}; save the overlays to another folder")
        if same_file(path, output):
            raise SemfuseError(f"{clash}, which is the output -o {output}; save the overlays to another folder")
        if path.is_dir():
            raise SemfuseError(f"{clash}, which is a folder; save the overlays to another folder")
    return paths


def stage_cam_overlays(files: StagedWrites, paths: Sequence[Path], images: Sequence[np.ndarray],
                       cams: np.ndarray) -> None:
    """Each image with its map, staged for the paths from check_cam_overlays (their folder
    made if needed), to appear with the output they belong to."""
    for folder in sorted({path.parent for path in paths}):
        files.folder(folder)
    for path, image, cam in zip(paths, images, cams):
        files.add(path, encoded_image(path, overlay_heatmap(np.asarray(image), cam)))
