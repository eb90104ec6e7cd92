"""Reading and writing images as numpy arrays: HxW (grey) or HxWx3 (RGB), uint8 or uint16.

OpenCV is the codec because it reads and writes 16-bit colour PNG and TIFF, which Pillow
does not. Files are decoded from bytes so that any path (and any error) is ours to report.
Decoding is strict: the header's size is checked against the pixel limit before anything is
decoded, and a truncated or corrupt file is refused, never fused. OpenCV's JPEG path is
lenient (a cut-off file decodes with a grey bottom), so a JPEG must end its scan with the
end-of-image marker and decode without libjpeg's corruption warnings.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from semfuse_rt.cache import atomic_write_bytes
from semfuse_rt.errors import SemfuseError

# The limit is ours (--max-pixels), checked on the header before decoding.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_PIXELS = 250_000_000
READ_FORMATS = "PNG, TIFF, JPEG or BMP"
# Formats recognised by their first bytes, and those OpenCV cannot read, named for the user.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"%PDF", "PDF"), (b"8BPS", "PSD"))
UNSUPPORTED = {"GIF", "PDF", "PSD", "HEIF/AVIF", "WebP"}
_JPEG_CORRUPTION = ("Corrupt JPEG data", "Premature end of JPEG", "JPEG datastream contains no image")

WRITE_FORMATS = {".png": ".png", ".tif": ".tiff", ".tiff": ".tiff", ".jpg": ".jpg",
                 ".jpeg": ".jpg", ".bmp": ".bmp"}
EIGHT_BIT_ONLY = {".jpg", ".bmp"}


def describe_size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def image_format(data: bytes) -> str | None:
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        return "WebP"
    if data[4:8] == b"ftyp":
        return "HEIF/AVIF"
    return None


def header_size(data: bytes, kind: str, path: Path) -> tuple[int, int]:
    """(width, height) from the header alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's complaints about metadata; the decoder judges
            with Image.open(io.BytesIO(data)) as header:
                return header.size
    except Exception:  # Pillow raises many types for a damaged header
        raise SemfuseError(f"{path}: damaged {kind} header; not a readable image") from None


def check_pixel_count(width: int, height: int, max_pixels: int, path: Path) -> None:
    if width * height > max_pixels:
        raise SemfuseError(f"{path}: {width}x{height} is {width * height / 1e6:.0f} MP, over the limit of "
                           f"{max_pixels / 1e6:g} MP per image; raise it with --max-pixels")


def jpeg_scan_is_complete(data: bytes) -> bool:
    """Whether the end-of-image marker follows the first top-level scan. Markers before the
    scan are skipped by their lengths (an EXIF thumbnail has an EOI of its own); inside the
    entropy-coded data 0xFF is always stuffed or a restart marker, so FF D9 is the real end."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xDA:
            return data.find(b"\xff\xd9", position + 2) != -1
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return False


@contextlib.contextmanager
def _captured_stderr():
    """What native code (libjpeg, libpng, libtiff) prints on file descriptor 2 meanwhile."""
    captured = {"text": ""}
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured["text"] = sink.read().decode(errors="replace")


def image_file_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image file from its header, within the pixel limit; the same
    one-line errors as load_image for what is not an image."""
    return _header(Path(path), max_pixels)[1:]


def _header(path: Path, max_pixels: int) -> tuple[bytes, int, int]:
    if not path.exists():
        raise SemfuseError(f"{path}: no such file")
    if path.is_dir():
        raise SemfuseError(f"{path}: is a folder, not an image")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SemfuseError(f"{path}: cannot read ({error.strerror})") from None
    if not data:
        raise SemfuseError(f"{path}: empty file, not an image")
    kind = image_format(data)
    if kind in UNSUPPORTED:
        animated = " (animated or not)" if kind == "GIF" else ""
        raise SemfuseError(f"{path}: {kind} images{animated} are not supported; use {READ_FORMATS}")
    if kind is None:
        raise SemfuseError(f"{path}: not an image in a known format; use {READ_FORMATS}")
    width, height = header_size(data, kind, path)
    check_pixel_count(width, height, max_pixels, path)
    return data, width, height


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    path = Path(path)
    data = _header(path, max_pixels)[0]
    kind = image_format(data)
    if kind == "JPEG" and not jpeg_scan_is_complete(data):
        raise SemfuseError(f"{path}: truncated JPEG (no end-of-image marker after the image data)")
    try:
        with _captured_stderr() as codec:
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "codec error"
        raise SemfuseError(f"{path}: OpenCV cannot decode this {kind} ({reason})") from None
    if decoded is None:
        raise SemfuseError(f"{path}: truncated or corrupt {kind} file")
    if kind == "JPEG" and any(sign in codec["text"] for sign in _JPEG_CORRUPTION):
        raise SemfuseError(f"{path}: corrupt JPEG data")
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


def check_not_an_input(output: str | os.PathLike, inputs) -> None:
    """The output may be no input: not by name, nor through a symbolic or hard link."""
    output = Path(output)
    target = output.resolve()
    for index, source in enumerate(inputs, start=1):
        source = Path(source)
        same = target == source.resolve()
        if not same and output.exists() and source.exists():
            same = os.path.samefile(output, source)
        if same:
            raise SemfuseError(f"{output}: is input {index} ({source}); the result would replace it, "
                               "so write it to another file")


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
