"""Reading and writing images as numpy arrays: HxW (grey) or HxWx3 (RGB), uint8 or uint16.

OpenCV is the codec because it reads and writes 16-bit colour PNG and TIFF, which Pillow
does not. Files are decoded from bytes so that any path (and any error) is ours to report.
Decoding is strict: the header's size is checked against the pixel limit before anything is
decoded, and a truncated or corrupt file is refused, never fused. OpenCV's JPEG path is
lenient (a cut-off file decodes with a grey bottom), so a JPEG must end its scan with the
end-of-image marker and decode without libjpeg's corruption warnings.

Images come out as a viewer shows them: a JPEG's or PNG's EXIF orientation is applied (the
header's size is the oriented one), and PGM/PPM samples are scaled to the full range of 8 or
16 bits from their declared maximum (Netpbm is decoded here, not by OpenCV, which does not
scale them). Only regular files are read, and the type is checked
on the open descriptor: a FIFO would block and a device such as /dev/zero never ends.
"""
from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import re
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, NamedTuple

import cv2
import numpy as np
from numpy.typing import DTypeLike
from PIL import Image
from PIL.TiffImagePlugin import TiffImageFile

from semfuse_rt.cache import atomic_write_bytes
from semfuse_rt.engine.limits.memory_budget import describe, is_out_of_memory, memory_at_hand
from semfuse_rt.engine.limits.pixel_limit import DEFAULT_MAX_PIXELS
from semfuse_rt.errors import SemfuseError

# The limit is ours (--max-pixels), checked on the header before decoding.
Image.MAX_IMAGE_PIXELS = None
READ_FORMATS = "PNG, TIFF, JPEG, BMP, PGM or PPM"
READ_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm"})
# Formats recognised by their first bytes, and those OpenCV cannot read, named for the user.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"%PDF", "PDF"), (b"8BPS", "PSD"))
UNSUPPORTED = {"GIF", "PDF", "PSD", "HEIF/AVIF", "WebP"}
# Netpbm's grey and colour maps, binary or plain text ("P5" or "P2" then whitespace).
_NETPBM = {b"P2": "PGM", b"P5": "PGM", b"P3": "PPM", b"P6": "PPM"}
# Formats whose decoders leave the EXIF orientation to the viewer (TIFF's apply their own).
_EXIF_ORIENTED = {"JPEG", "PNG"}
_EXIF_ORIENTATION_TAG = 0x0112
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
    if data[:2] in _NETPBM and data[2:3].isspace():
        return _NETPBM[data[:2]]
    return None


class ImageHeader(NamedTuple):
    width: int  # as shown, after the EXIF orientation
    height: int
    orientation: int  # EXIF orientation still to apply to the decoded pixels: 1 (none) to 8
    # What decoding takes at its peak, a pixel: the decoder's output and, for colour, the RGB
    # copy made from it (for the line of an image that does not fit the memory left).
    decoding_bytes_per_pixel: int


# The channels OpenCV decodes Pillow's header modes into, where they differ from the
# header's bands: a palette comes out as colour, grey with alpha as colour with alpha.
_DECODED_CHANNELS = {"P": 3, "PA": 4, "LA": 4, "La": 4}


def _decoding_bytes_per_pixel(header: Image.Image, kind: str, data: bytes) -> int:
    mode = header.mode
    channels = _DECODED_CHANNELS.get(mode, len(header.getbands()))
    if mode in ("I", "F"):
        sample = 4
    elif ("16" in mode or (kind == "PNG" and data[24:25] == b"\x10")
          or (kind == "TIFF" and max(getattr(header, "tag_v2", {}).get(258, (8,))) > 8)):
        sample = 2  # Pillow calls 16-bit colour RGB
    else:
        sample = 1
    return channels * sample + (3 * sample if channels > 1 else 0)


def header_size(data: bytes, kind: str, path: Path) -> ImageHeader:
    """The size from the header alone, and the orientation the decoded pixels need."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's complaints about metadata; the decoder judges
            with Image.open(io.BytesIO(_png_header_chunks(data) if kind == "PNG" else data)) as header:
                width, height = header.size
                orientation = _exif_orientation(header) if kind in _EXIF_ORIENTED else 1
                decoding_bytes_per_pixel = _decoding_bytes_per_pixel(header, kind, data)
    except Exception:  # Pillow raises many types for a damaged header
        raise SemfuseError(f"{path}: damaged {kind} header; not a readable image") from None
    if orientation >= 5:  # the transposing orientations: a quarter turn, or a flip across a diagonal
        width, height = height, width
    return ImageHeader(width, height, orientation, decoding_bytes_per_pixel)


def check_pixel_count(width: int, height: int, max_pixels: int, path: Path) -> None:
    if width * height > max_pixels:
        raise SemfuseError(f"{path}: {width}x{height} is {width * height / 1e6:.0f} MP, over the limit of "
                           f"{max_pixels / 1e6:g} MP per image; raise it with --max-pixels")


def _exif_orientation(header: Image.Image) -> int:
    """The EXIF orientation tag, 1 where absent or out of range. Image.Image's getexif reads
    what the header holds; PNG's own would decode the whole image to look past the pixels."""
    try:
        orientation = Image.Image.getexif(header).get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block leaves the image as stored, as viewers do
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def _png_header_chunks(data: bytes) -> bytes:
    """The PNG's signature, IHDR and eXIf chunks and the first IDAT's chunk header: all that
    its size and orientation need. Pillow inflates text and ICC chunks while it reads a
    header, and refuses one of more than 1 MB as damaged (MAX_TEXT_CHUNK, its guard against
    bombs); they carry nothing fusion uses, and OpenCV decodes such files."""
    kept, position = [data[:8]], 8
    while position + 8 <= len(data):
        kind = data[position + 4:position + 8]
        if kind == b"IDAT":
            kept.append(data[position:position + 8])
            break
        end = position + 12 + int.from_bytes(data[position:position + 4], "big")
        if kind in (b"IHDR", b"eXIf"):
            kept.append(data[position:end])
        position = end
    return b"".join(kept)


def oriented(image: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as stored, turned and flipped as EXIF orientation 1-8 says a viewer shows them."""
    turned = {1: image, 2: image[:, ::-1], 3: image[::-1, ::-1], 4: image[::-1], 5: image.swapaxes(0, 1),
              6: np.rot90(image, -1), 7: np.rot90(image, 2).swapaxes(0, 1), 8: np.rot90(image, 1)}[orientation]
    return turned if orientation == 1 else np.ascontiguousarray(turned)


def _netpbm_fields(data: bytes) -> list[re.Match]:
    """A Netpbm header's magic, width, height and maximum sample, comments skipped (fewer
    where `data` ends first)."""
    return list(itertools.islice((match for match in re.finditer(rb"#[^\r\n]*|[^\s#]+", data)
                                  if not match.group().startswith(b"#")), 4))


def netpbm_pixels(data: bytes, path: Path) -> np.ndarray:
    """A PGM or PPM, binary (P5, P6) or plain text (P2, P3), as HxW or HxWx3 with samples
    scaled from the declared maximum to the full 8 or 16 bits, as a viewer shows them. Ours,
    not OpenCV's: it leaves binary samples unscaled (a 12-bit PGM would look 16 times too
    dark) and misreads plain ones over 255. Pillow has checked the header's fields."""
    fields = _netpbm_fields(data)
    magic = fields[0].group()
    kind = _NETPBM[magic]
    width, height, top = (int(field.group()) for field in fields[1:])
    shape = (height, width, 3) if kind == "PPM" else (height, width)
    count = int(np.prod(shape))
    raster = memoryview(data)[fields[3].end() + 1:]  # one whitespace byte ends the header
    dtype = np.dtype(np.uint16) if top > 255 else np.dtype(np.uint8)
    # Wide enough for sample * full range: 65535 * 65535 fits in 32 bits, 255 * 255 in 16.
    work: np.dtype[np.unsignedinteger] = np.dtype(np.uint32) if top > 255 else np.dtype(np.uint16)
    if magic in (b"P5", b"P6"):
        sample = np.dtype(">u2" if top > 255 else "u1")
        if len(raster) < count * sample.itemsize:
            raise SemfuseError(f"{path}: truncated {kind} file")
        samples = np.frombuffer(raster, sample, count).astype(work)
    else:
        words = bytes(raster).split()
        if len(words) < count:
            raise SemfuseError(f"{path}: truncated {kind} file")
        try:
            samples = np.array([int(word) for word in words[:count]], np.int64)
        except (ValueError, OverflowError):
            raise SemfuseError(f"{path}: corrupt {kind} file (a sample is not a number of 0..{top})") from None
    if samples.min(initial=0) < 0 or samples.max(initial=0) > top:
        raise SemfuseError(f"{path}: corrupt {kind} file (a sample is outside 0..{top})")
    full = np.iinfo(dtype).max
    if top != full:
        samples = (samples.astype(work) * full + top // 2) // top  # rounded to the nearest level
    return samples.astype(dtype).reshape(shape)


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
    header = _header(Path(path), max_pixels)[2]
    return header.width, header.height


# Enough of a Netpbm file for its header, comment lines included.
_NETPBM_HEADER_BYTES = 1 << 16


def has_16_bit_samples(path: str | os.PathLike) -> bool:
    """Whether the file's header declares 16-bit samples (PNG, TIFF, and PGM/PPM with a
    maximum over 255), from its first bytes: a cheap look before any decoding. False where
    the header cannot be read; reading the image then reports why."""
    try:
        if not Path(path).is_file():  # a FIFO or a device would block or never end
            return False
        with open(path, "rb") as handle:
            start = handle.read(32)
            if image_format(start) in ("PGM", "PPM"):
                fields = _netpbm_fields(start + handle.read(_NETPBM_HEADER_BYTES))
                return len(fields) == 4 and int(fields[3].group()) > 255
        if start.startswith(b"\x89PNG\r\n\x1a\n"):
            return start[24] == 16  # the IHDR chunk's bit depth
        if image_format(start) == "TIFF":
            with Image.open(path) as header:  # Pillow reads the tags, not the strips
                return isinstance(header, TiffImageFile) and max(header.tag_v2.get(258, (8,))) > 8
    except Exception:  # noqa: BLE001 - a damaged header is the decoder's to report, with its reason
        return False
    return False


_FILE_TYPES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_type(mode: int) -> str:
    """The kind of file a stat mode that is not a regular file's names: "a folder", "a FIFO
    (named pipe)", ..., for messages."""
    return next((name for is_type, name in _FILE_TYPES if is_type(mode)), "a special file")


def link_loop_error(path: Path) -> SemfuseError:
    return SemfuseError(f"{path}: is a symbolic link loop (its links never reach a file); "
                        "point the link at a file, or give the file's own path")


def refuse_link_loop(path: str | os.PathLike) -> None:
    """A loop of symbolic links is a one-line error: Path.exists() calls it missing, and
    Path.resolve() raises."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise link_loop_error(Path(path)) from None


def _not_a_regular_file(path: Path, mode: int) -> SemfuseError:
    return SemfuseError(f"{path}: is {file_type(mode)}, not an image; give an image file ({READ_FORMATS})")


def read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file. Opened without blocking and checked on the descriptor, so
    that nothing can swap a FIFO in between the check and the read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except ValueError:  # os.open's answer to a NUL in the name
        raise SemfuseError(f"{str(path)!r}: not a file name (it holds a NUL character)") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise link_loop_error(path) from None
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise SemfuseError(f"{path}: no such file") from None
        if error.errno == errno.ENXIO:  # a socket cannot be opened at all
            raise _not_a_regular_file(path, os.stat(path).st_mode) from None
        raise SemfuseError(f"{path}: cannot read ({error.strerror})") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise _not_a_regular_file(path, mode)
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as error:
        raise SemfuseError(f"{path}: cannot read ({error.strerror})") from None
    finally:
        os.close(descriptor)


def _header(path: Path, max_pixels: int) -> tuple[bytes, str, ImageHeader]:
    data = read_regular_file(path)
    if not data:
        raise SemfuseError(f"{path}: empty file, not an image")
    kind = image_format(data)
    if kind in UNSUPPORTED:
        animated = " (animated or not)" if kind == "GIF" else ""
        raise SemfuseError(f"{path}: {kind} images{animated} are not supported; use {READ_FORMATS}")
    if kind is None:
        raise SemfuseError(f"{path}: not an image in a known format; use {READ_FORMATS}")
    header = header_size(data, kind, path)
    check_pixel_count(header.width, header.height, max_pixels, path)
    return data, kind, header


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    path = Path(path)
    data, kind, header = _header(path, max_pixels)
    try:
        return _decoded(data, kind, header, path)
    except Exception as error:  # MemoryError (numpy), or OpenCV's "Insufficient memory"
        if not is_out_of_memory(error):
            raise
        raise decoding_out_of_memory(path, header) from None


def decoding_out_of_memory(path: Path, header: ImageHeader) -> SemfuseError:
    """The one line for an image too large for the memory left: its size, what decoding it
    takes and which options help, before any fuse has started."""
    pixels = header.width * header.height
    need = pixels * header.decoding_bytes_per_pixel
    return SemfuseError(f"{path}: out of memory decoding its {header.width}x{header.height} pixels "
                        f"({pixels / 1e6:,.1f} MP, about {describe(need)}){memory_at_hand()}; free memory, lower "
                        "--memory-budget so that a tiled fuse keeps the images it has read on disk, or refuse "
                        f"images this large before decoding with --max-pixels below {pixels}")


def _decoded(data: bytes, kind: str, header: ImageHeader, path: Path) -> np.ndarray:
    if kind in _NETPBM.values():
        return netpbm_pixels(data, path)  # Netpbm carries no orientation
    if kind == "JPEG" and not jpeg_scan_is_complete(data):
        raise SemfuseError(f"{path}: truncated JPEG (no end-of-image marker after the image data)")
    try:
        with _captured_stderr() as codec:
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        if is_out_of_memory(error):
            raise  # load_image's line, which says what would help
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "codec error"
        raise SemfuseError(f"{path}: OpenCV cannot decode this {kind} ({reason})") from None
    if decoded is None:
        raise SemfuseError(f"{path}: truncated or corrupt {kind} file")
    if kind == "JPEG" and any(sign in codec["text"] for sign in _JPEG_CORRUPTION):
        raise SemfuseError(f"{path}: corrupt JPEG data")
    return oriented(_to_rgb_or_grey(decoded, path), header.orientation)


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


def check_output(path: str | os.PathLike, dtype: DTypeLike = np.uint8) -> Path:
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
    refuse_link_loop(path)
    if path.is_dir():
        raise SemfuseError(f"{path}: is a folder")
    if path.exists() and not path.is_file():
        raise SemfuseError(f"{path}: is {file_type(path.stat().st_mode)}, not a regular file; "
                           "write the output to a new or a regular file")
    if not path.parent.is_dir():
        raise SemfuseError(f"{path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise SemfuseError(f"{path}: folder {path.parent} is not writable")
    return path


def file_identity(path: str | os.PathLike) -> frozenset:
    """What makes two paths one file: the name with its links resolved, and the device and
    inode where the file exists (a hard link). Paths whose identities meet are the same file."""
    path = Path(path)
    refuse_link_loop(path)
    keys: set[object] = {path.resolve()}
    try:
        found = os.stat(path)
    except (OSError, ValueError):  # missing, or a name the system cannot hold: the name alone
        pass
    else:
        keys.add((found.st_dev, found.st_ino))
    return frozenset(keys)


def same_file(path: str | os.PathLike, other: str | os.PathLike) -> bool:
    """Whether writing `path` would replace `other`: the same name, or a symbolic or hard link."""
    return not file_identity(path).isdisjoint(file_identity(other))


class InputFiles:
    """Many inputs, to check many outputs against at one look-up each (same_file's test):
    each input under its identities, with what it is for messages ("input 2 of set c/a")."""

    def __init__(self, inputs: Iterable[tuple[str | os.PathLike, str]]):
        self._named: dict[object, tuple[Path, str]] = {}
        for path, what in inputs:
            for key in file_identity(path):
                self._named.setdefault(key, (Path(path), what))

    def replaced_by(self, output: str | os.PathLike) -> tuple[Path, str] | None:
        """The input (its path, and what it is) that writing `output` would replace, if any."""
        return next((self._named[key] for key in file_identity(output) if key in self._named), None)


def check_not_an_input(output: str | os.PathLike, inputs) -> None:
    """The output may be no input: not by name, nor through a symbolic or hard link."""
    output = Path(output)
    for index, source in enumerate(inputs, start=1):
        source = Path(source)
        if same_file(output, source):
            raise SemfuseError(f"{output}: is input {index} ({source}); the result would replace it, "
                               "so write it to another file")


def encoded_image(path: str | os.PathLike, image: np.ndarray) -> bytes:
    """The file's bytes, in the format of its extension (after check_output)."""
    path = check_output(path, image.dtype)
    bgr = image[:, :, ::-1] if image.ndim == 3 else image
    ok, encoded = cv2.imencode(WRITE_FORMATS[path.suffix.lower()], np.ascontiguousarray(bgr))
    if not ok:
        raise SemfuseError(f"{path}: could not encode image")
    return encoded.tobytes()


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Encode by the file's extension and write atomically (temp file, then rename)."""
    data = encoded_image(path, image)
    try:
        atomic_write_bytes(Path(path), data)
    except OSError as error:
        raise SemfuseError(f"{path}: cannot write ({error.strerror})") from None
    return Path(path)


def check_writable_folder(directory: str | os.PathLike, option: str) -> Path:
    """Before any work: `directory`, given with `option`, is a folder that can be written,
    or one that can be made. Made and removed at once to tell: only trying does (as root,
    access() allows even /proc), and a run that fails later must leave no empty folder."""
    directory = Path(directory)
    fix = f"name a folder that can be written with {option}"
    refuse_link_loop(directory)
    if directory.exists():
        if not directory.is_dir():
            raise SemfuseError(f"{option} {directory}: is a file, not a folder; {fix}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SemfuseError(f"{option} {directory}: folder is not writable; {fix}")
        return directory
    missing = directory
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    try:
        missing.mkdir()
    except FileExistsError:  # a run started beside this one made it meanwhile
        return check_writable_folder(directory, option)
    except OSError as error:
        raise SemfuseError(f"{option} {directory}: cannot create folder {missing} "
                           f"({error.strerror or error}); {fix}") from None
    with contextlib.suppress(OSError):  # not empty: a run beside this one uses it
        missing.rmdir()
    return directory
