"""Whole-image baselines from the exposure-fusion field, which weigh each input pixel by
its own contrast, saturation and well-exposedness and blend in a Laplacian pyramid (T.
Mertens, J. Kautz, F. Van Reeth, "Exposure fusion", Pacific Graphics 2007):

- `mertens`: OpenCV's `createMergeMertens`;
- `enfuse`: Hugin's enfuse (`apt-get install enfuse`), when the binary is installed. Its
  default weights are for exposure stacks; `recipe=focus` is its focus-stacking recipe
  (`--exposure-weight=0 --saturation-weight=0 --contrast-weight=1 --hard-mask`).

Inputs are prepared and results finished by engine/io/sources.py, as for every method (grey
sets replicated to RGB going in and back to grey coming out; mixed sets on luma).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from semfuse_rt.engine.io.sources import finish, prepare
from semfuse_rt.errors import SemfuseError

ENFUSE_RECIPES = {
    "exposure": [],  # enfuse's defaults
    "focus": ["--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1", "--hard-mask"],
}


def mertens(images: Sequence[np.ndarray], *, contrast: float = 1.0, saturation: float = 1.0,
            exposure: float = 1.0) -> np.ndarray:
    sources = prepare(images)
    merge = cv2.createMergeMertens(float(contrast), float(saturation), float(exposure))
    # OpenCV takes 0..255 BGR (it divides by 255) and returns about 0..1.
    bgr = [np.ascontiguousarray(p.transpose(1, 2, 0)[:, :, ::-1]) for p in sources.pixels]
    fused = merge.process(bgr)[:, :, ::-1] * 255.0
    return finish(fused.transpose(2, 0, 1), sources)


def enfuse_binary() -> str | None:
    return shutil.which("enfuse")


def enfuse(images: Sequence[np.ndarray], *, recipe: str = "exposure") -> np.ndarray:
    if recipe not in ENFUSE_RECIPES:
        raise SemfuseError(f"enfuse: unknown recipe {recipe!r}; use one of {', '.join(ENFUSE_RECIPES)}")
    binary = enfuse_binary()
    if binary is None:
        raise SemfuseError("enfuse is not installed (apt-get install enfuse)")
    sources = prepare(images)
    with tempfile.TemporaryDirectory(prefix="semfuse-enfuse-") as folder:
        names = []
        for index, plane in enumerate(sources.pixels):
            # 16-bit TIFF keeps the 0..255 floats to 1/257 of a level.
            rgb16 = np.clip(np.rint(plane.transpose(1, 2, 0).astype(np.float64) * 257), 0, 65535).astype(np.uint16)
            name = str(Path(folder, f"in{index}.tif"))
            cv2.imwrite(name, rgb16[:, :, ::-1])
            names.append(name)
        output = str(Path(folder, "out.tif"))
        run = subprocess.run([binary, "--depth=16", "-o", output, *ENFUSE_RECIPES[recipe], *names],
                             capture_output=True, text=True)
        result = cv2.imread(output, cv2.IMREAD_UNCHANGED) if run.returncode == 0 else None
    if result is None:
        last = (run.stderr or run.stdout).strip().splitlines()[-1:] or [f"exit status {run.returncode}"]
        raise SemfuseError(f"enfuse failed: {last[0]}")
    rgb = result[:, :, 2::-1] if result.ndim == 3 else np.repeat(result[:, :, None], 3, axis=2)
    return finish(rgb.astype(np.float64).transpose(2, 0, 1) / 257.0, sources)


IMAGE_BASELINES: dict[str, Callable[..., np.ndarray]] = {"mertens": mertens, "enfuse": enfuse}
