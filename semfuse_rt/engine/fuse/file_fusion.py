"""Read, fuse, write: the one procedure under `Fuser.fuse_files` and the start-only fuse's
(engine/fuse/start_only.py), for any fuser that says how it will run a size (`spills`, `tiles`),
fuses decoded images and reports retention. Free of torch: a fuser that needs it has it."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from semfuse_rt.cache import StagedWrites
from semfuse_rt.engine.semantic.heatmaps import check_cam_overlays, stage_cam_overlays
from semfuse_rt.engine.io.images import (DEFAULT_MAX_PIXELS, check_not_an_input, check_output, encoded_image,
                                     image_file_size, load_image)
from semfuse_rt.engine.fuse.methods import Method, check_applicable
from semfuse_rt.engine.io.spilled_images import SpilledImage, spill_folder
from semfuse_rt.errors import SemfuseError

if TYPE_CHECKING:
    from semfuse_rt.engine.backends.base import ProgressCallback
    from semfuse_rt.engine.semantic.cam import Retention
    from semfuse_rt.engine.fuse.fusion_result import FusionResult
    from semfuse_rt.engine.large.tiling import Tile


class FileFuser(Protocol):
    method: Method

    def spills(self, count: int, height: int, width: int) -> bool:
        """Whether the decoded inputs of a fuse of this size wait on disk."""

    def tiles(self, count: int, height: int, width: int, spilled: bool = False) -> list[Tile] | None:
        """None for a whole-image fuse, else its tiles; a SemfuseError where even tiles cannot fit."""

    def __call__(self, images: Sequence[np.ndarray], progress: ProgressCallback | None = None) -> FusionResult: ...

    def retention(self, images: Sequence[np.ndarray], fused: np.ndarray) -> list[Retention]: ...


def read_fuse_write(fuser: FileFuser, paths: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                    save_cams: str | os.PathLike | None = None, report: bool = False,
                    progress: ProgressCallback | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> FusionResult:
    """Read, fuse and write atomically; the output's format follows its extension and may not
    be one of the inputs.

    `save_cams` names a folder for each input's CAM overlay (semantic methods); `report`
    fills `result.retention`; `max_pixels` limits each input's size, read from its header.
    Nothing is written until the report is done, and then the output and its overlays
    appear together or not at all."""
    if save_cams is not None:
        check_applicable(fuser.method, ["save_cams"])
    if not (isinstance(max_pixels, int) and max_pixels > 0):
        raise SemfuseError(f"--max-pixels must be a positive whole number, got {max_pixels}")
    check_not_an_input(output, paths)
    overlays = None if save_cams is None else check_cam_overlays(save_cams, paths, output)
    sizes = [image_file_size(p, max_pixels) for p in paths]
    spill = False
    if len(sizes) >= 2 and len(set(sizes)) == 1:  # other cases fail in check_images, with names
        (width, height), count = sizes[0], len(paths)
        spill = fuser.spills(count, height, width)
        fuser.tiles(count, height, width, spilled=spill)  # refuses, before decoding, what cannot fit
    with spill_folder() if spill else contextlib.nullcontext() as folder:
        decoding = time.perf_counter()
        images = [_decoded(p, max_pixels, folder) for p in paths]
        deepest = np.uint16 if any(i.dtype == np.uint16 for i in images) else np.uint8
        check_output(output, deepest)
        decoded = time.perf_counter()
        result = fuser(images, progress)
        fused = time.perf_counter()
        # Inside the spill folder's life: spilled inputs are read back here, one at a time.
        if report:
            result.retention = fuser.retention(images, result.image)
        reported = time.perf_counter()
        # The output and its overlays appear together or not at all (a full disk).
        with StagedWrites() as files:
            files.add(output, encoded_image(output, result.image))
            if overlays is not None:
                assert result.cams is not None  # save_cams is refused above for methods without maps
                stage_cam_overlays(files, overlays, images, result.cams)
            files.commit()
    encoded = time.perf_counter()
    result.stages = {"decode": decoded - decoding, **result.stages,
                     **({"report": reported - fused} if report else {}), "encode": encoded - reported}
    return result


def _decoded(path, max_pixels: int, folder: Path | None):
    """The decoded image, in memory or, given a spill folder, on disk there."""
    image = load_image(path, max_pixels)
    return image if folder is None else SpilledImage(image, folder)
