"""Reading and writing images as numpy arrays: HxW (grey) or HxWx3 (RGB), uint8 or uint16.

OpenCV is the codec because it reads and writes 16-bit colour PNG and TIFF, which Pillow
does not. Files are decoded from bytes so that any path (and any error) is ours to report.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from semfuse_rt.errors import SemfuseError
from semfuse_rt.cache import atomic_write_bytes

WRITE_FORMATS = {".png": ".png", ".tif": ".tiff", ".tiff": ".tiff", ".jpg": ".jpg",
                 ".jpeg": ".jpg", ".bmp": ".bmp"}
EIGHT_BIT_ONLY = {".jpg", ".bmp"}


def describe_size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def load_image(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise SemfuseError(f"{path}: no such file")
    if path.is_dir():
        raise SemfuseError(f"{path}: is a folder, not an image")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SemfuseError(f"{path}: cannot read ({error.strerror})") from None
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if decoded is None:
        raise SemfuseError(f"{path}: not a readable image (corrupt or unknown format)")
    return _to_rgb_or_grey(decoded, path)


def _to_rgb_or_grey(decoded: np.ndarray, path: Path) -> np.ndarray:
    if decoded.dtype not in (np.uint8, np.uint16):
        raise SemfuseError(
            f"{path}: unsupported mode ({decoded.dtype} samples); use 8- or 16-bit integer images"
        )
    if decoded.ndim == 2:
        return decoded
    channels = decoded.shape[2]
    if channels == 1:
        return decoded[:, :, 0]
    if channels == 3:
        return np.ascontiguousarray(decoded[:, :, ::-1])
    if channels == 4:
        # Alpha carries no scene content for fusion; the colour channels are the image.
        return np.ascontiguousarray(decoded[:, :, 2::-1])
    raise SemfuseError(f"{path}: unsupported mode ({channels} channels)")


def check_output(path: str | os.PathLike, dtype: np.dtype = np.dtype(np.uint8)) -> Path:
    """Everything about an output path that can be checked before the work is done."""
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in WRITE_FORMATS:
        raise SemfuseError(
            f"{path}: unknown output format {extension or '(none)'}; use one of "
            + ", ".join(sorted(WRITE_FORMATS))
        )
    if np.dtype(dtype) == np.uint16 and extension in EIGHT_BIT_ONLY:
        raise SemfuseError(f"{path}: {extension} cannot hold 16-bit images; use .png or .tif")
    if path.is_dir():
        raise SemfuseError(f"{path}: is a folder")
    if not path.parent.is_dir():
        raise SemfuseError(f"{path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise SemfuseError(f"{path}: folder {path.parent} is not writable")
    return path


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Encode by the file's extension and write atomically (temp file, then rename)."""
    path = check_output(path, image.dtype)
    extension = path.suffix.lower()
    bgr = image[:, :, ::-1] if image.ndim == 3 else image
    ok, encoded = cv2.imencode(WRITE_FORMATS[extension], np.ascontiguousarray(bgr))
    if not ok:
        raise SemfuseError(f"{path}: could not encode image")
    try:
        atomic_write_bytes(path, encoded.tobytes())
    except OSError as error:
        raise SemfuseError(f"{path}: cannot write ({error.strerror})") from None
    return path
