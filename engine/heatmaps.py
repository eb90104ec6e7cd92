"""Pictures of class activation maps: a map blended over its image."""
from __future__ import annotations

import cv2
import numpy as np

OVERLAY_ALPHA = 0.5


def overlay_heatmap(image: np.ndarray, cam_map: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """8-bit RGB: the image (grey or colour, 8/16-bit) blended with the map in the jet colours."""
    display = image.astype(np.float64) / (257.0 if image.dtype == np.uint16 else 1.0)
    if display.ndim == 2:
        display = np.repeat(display[:, :, None], 3, axis=2)
    levels = np.rint(np.clip(cam_map, 0.0, 1.0) * 255.0).astype(np.uint8)
    heat = cv2.applyColorMap(levels, cv2.COLORMAP_JET)[:, :, ::-1].astype(np.float64)  # BGR -> RGB
    return np.clip(np.rint((1.0 - alpha) * display + alpha * heat), 0, 255).astype(np.uint8)


def save_cam_overlays(directory, names, images, cams) -> list:
    """One `<name>_cam.png` per input in `directory` (created if needed); returns the paths."""
    from pathlib import Path

    from semfuse_rt.errors import SemfuseError
    from semfuse_rt.engine.images import save_image

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SemfuseError(f"{directory}: cannot create folder ({error.strerror})") from None
    return [save_image(directory / f"{Path(name).stem}_cam.png", overlay_heatmap(image, cam))
            for name, image, cam in zip(names, images, cams)]
