"""Reading and writing frame streams: video files through PyAV, and frame folders.

A stream is a video file (any container FFmpeg demuxes) or a folder of image files, taken in
natural order (frame2 before frame10) and read with `engine/io/images.py`. `probe` learns a
stream's frame count, size, mode and frame rate before anything is fused, so that streams
which cannot be fused together are refused at once, in one line. A still image is refused
too (FFmpeg would read it as a video of one frame), and so is a FIFO or a device.

Frames come out as the rest of the package takes images: HxW (grey) or HxWx3 (RGB), uint8,
or uint16 from deeper sources. A video stream is grey when its pixel format has no chroma,
or when the chroma of its first frame is flat (grey content encoded as YUV, as most grey
video is): a grey set is fused once, not per channel, and gives a grey result.

Video output is H.264 (libx264, in every PyAV wheel) in full ("JPEG") range, so that grey
levels survive exactly: `quality` is x264's CRF (0-51, lower is better) and `lossless` is
QP 0, which keeps 8-bit grey frames bit-exact (colour within 2 levels, from the YUV
conversion). An output path without a video suffix is a frame folder of PNGs, which keeps
16-bit frames. Either way the result is assembled beside its destination and renamed into
place at the end, so an interrupted or failed run leaves no partial output.
"""
from __future__ import annotations

import math
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Final, Generator, Iterable, Iterator, Sequence

import numpy as np

from semfuse_rt.cache import STALE_SECONDS, TEMP_SUFFIX, _umask, glob_escape, new_file_mode, remove_if_older
from semfuse_rt.engine.io.images import (DEFAULT_MAX_PIXELS, READ_SUFFIXES, UNSUPPORTED, check_not_an_input, file_type,
                                     image_file_size, image_format, load_image, refuse_link_loop, save_image)
from semfuse_rt.errors import SemfuseError

if TYPE_CHECKING:  # PyAV is imported where a video is read or written (_import_av)
    from av.container import OutputContainer
    from av.video.stream import VideoStream

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".m4v", ".webm")
WRITE_VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")  # containers that carry H.264
FRAME_SUFFIXES = tuple(sorted(READ_SUFFIXES))
DEFAULT_FOLDER_FPS = Fraction(25)  # frame folders carry no rate
# --fps: the range MP4, Matroska (millisecond timestamps) and QuickTime all keep exactly.
MIN_FPS, MAX_FPS = 0.01, 1000.0
DEFAULT_CRF = 18  # x264's "visually lossless" end of the scale
VIDEO_CODEC: Final = "libx264"
# Chroma within this many levels of 128 everywhere in the first frame: grey content.
GREY_CHROMA_TOLERANCE = 2
PREFETCH_FRAMES = 4


@dataclass(frozen=True)
class StreamInfo:
    path: Path
    kind: str  # "video" or "folder"
    frames: int
    width: int
    height: int
    grey: bool
    deep: bool  # more than 8 bits a sample: frames come out as uint16
    fps: Fraction | None  # None for a frame folder

    def describe(self) -> str:
        return f"{self.path} ({self.frames} frames of {self.width}x{self.height})"


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def folder_frames(folder: Path) -> list[Path]:
    """A frame folder's image files in natural order; hidden files and other files ignored."""
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FRAME_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _import_av():
    try:
        import av
    except ImportError:
        raise SemfuseError("PyAV is not installed; install it with: pip install av") from None
    return av


def _open_video(path: Path):
    av = _import_av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise SemfuseError(f"{path}: not a readable video ({_reason(error)})") from None
    if not container.streams.video:
        container.close()
        raise SemfuseError(f"{path}: has no video stream")
    return container


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _is_deep(pix_fmt: str) -> bool:
    av = _import_av()
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components) > 8
    except (ValueError, av.FFmpegError):
        return False


def _grey_frame(frame) -> bool:
    """Whether a decoded frame carries no colour: a format without chroma, or flat chroma."""
    name = frame.format.name
    if name.startswith(("gray", "ya")):
        return True
    if not name.startswith(("yuv", "nv")):
        rgb = frame.to_ndarray(format="rgb24")
        return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    planes = frame.reformat(format="yuv444p").to_ndarray()  # (3, H, W)
    return int(np.abs(planes[1:].astype(np.int16) - 128).max()) <= GREY_CHROMA_TOLERANCE


def _video_frame_count(container, stream) -> int:
    if stream.frames > 0:
        return stream.frames
    # No count in the header (some containers): count packets, which needs no decoding.
    count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    container.seek(0)
    return count


def probe(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> StreamInfo:
    """A stream's frame count, size, mode and rate, read before any frame is fused; the
    first frame is decoded to learn whether the stream is grey."""
    path = Path(path)
    refuse_link_loop(path)
    if not path.exists():
        raise SemfuseError(f"{path}: no such file or folder")
    if path.is_dir():
        files = folder_frames(path)
        if not files:
            raise SemfuseError(f"{path}: frame folder holds no image files ({', '.join(FRAME_SUFFIXES)})")
        width, height = image_file_size(files[0], max_pixels)
        for file in files[1:]:
            other = image_file_size(file, max_pixels)
            if other != (width, height):
                raise SemfuseError(f"{file}: is {other[0]}x{other[1]} but {files[0].name} is {width}x{height}; "
                                   "the frames of a folder need one size")
        first = load_image(files[0], max_pixels)
        return StreamInfo(path, "folder", len(files), width, height, first.ndim == 2,
                          first.dtype == np.uint16, None)
    _check_video_file(path)
    av = _import_av()
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_pixels:
            raise SemfuseError(f"{path}: {width}x{height} frames are over the limit of {max_pixels / 1e6:g} MP; "
                               "raise it with --max-pixels")
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        count = _video_frame_count(container, stream)
        try:
            first_frame = next(container.decode(stream), None)
        except av.FFmpegError as error:
            raise SemfuseError(f"{path}: cannot decode its first frame ({_reason(error)})") from None
        if first_frame is None or count == 0:
            raise SemfuseError(f"{path}: video stream has no frames")
        return StreamInfo(path, "video", count, first_frame.width, first_frame.height, _grey_frame(first_frame),
                          _is_deep(first_frame.format.name), Fraction(fps) if fps else None)
    finally:
        container.close()


def _check_video_file(path: Path) -> None:
    """Refuses, before FFmpeg opens it, what is not a video file: a FIFO or a device (FFmpeg
    would wait on it, or read it for ever) and a still image (FFmpeg reads one as a stream of
    one frame)."""
    if not path.is_file():
        raise SemfuseError(f"{path}: is {file_type(path.stat().st_mode)}, not a video; "
                           "give a video file or a folder of frames")
    with open(path, "rb") as handle:
        kind = image_format(handle.read(16))
    # Only the formats engine/io/images.py reads are stills here: an MP4 or MOV starts like a
    # HEIF, and a GIF or WebP may be animated, so those are FFmpeg's to judge.
    if kind is not None and kind not in UNSUPPORTED:
        raise SemfuseError(f"{path}: is a still image ({kind}); fuse-video takes video files or folders of "
                           "frames; fuse still images with `semfuse-rt fuse`")


def check_streams(infos: Sequence[StreamInfo]) -> None:
    """Streams fused together must agree on frame size, frame count and (videos) rate."""
    if len(infos) < 2:
        raise SemfuseError(f"video fusion needs at least 2 streams, got {len(infos)}")
    first = infos[0]
    for index, info in enumerate(infos[1:], start=2):
        if (info.width, info.height) != (first.width, first.height):
            raise SemfuseError(f"frame sizes differ: stream 1 {first.describe()} but stream {index} "
                               f"{info.describe()}; fusion needs registered streams of one size")
        if info.frames != first.frames:
            raise SemfuseError(f"frame counts differ: stream 1 {first.describe()} but stream {index} "
                               f"{info.describe()}; fusion needs synchronised streams")
    rates = {(index, info.fps) for index, info in enumerate(infos, start=1) if info.fps is not None}
    if len({fps for _, fps in rates}) > 1:
        described = ", ".join(f"stream {index} {float(fps):g} fps" for index, fps in sorted(rates))
        raise SemfuseError(f"frame rates differ ({described}); fusion needs synchronised streams")


def stream_rate(infos: Sequence[StreamInfo], fps: float | Fraction | None = None) -> Fraction:
    """The output's frame rate: `fps` where given, else the inputs' (25 for folders alone)."""
    if fps is not None:
        # Refused, not clamped: a rate below what 1001 as denominator can hold would become 0,
        # which the encoder turns into 24 fps, and infinities and NaN are no rate at all.
        if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
            raise SemfuseError(f"--fps must be from {MIN_FPS:g} to {MAX_FPS:g} frames a second, got {fps}; "
                               "leave it out to keep the inputs' rate")
        return Fraction(fps).limit_denominator(1001)
    rates = [info.fps for info in infos if info.fps is not None]
    return rates[0] if rates else DEFAULT_FOLDER_FPS


def read_frames(info: StreamInfo, start: int = 0, stop: int | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Generator[np.ndarray, None, None]:
    """Frames start..stop-1 of a probed stream, in order."""
    stop = info.frames if stop is None else min(stop, info.frames)
    if info.kind == "folder":
        for file in folder_frames(info.path)[start:stop]:
            frame = load_image(file, max_pixels)
            if frame.shape[:2] != (info.height, info.width):
                raise SemfuseError(f"{file}: frame size changed while reading the folder")
            yield frame
        return
    yield from _decode(info, start, stop)


def _decode(info: StreamInfo, start: int, stop: int) -> Iterator[np.ndarray]:
    av = _import_av()
    layout = ("gray16le" if info.deep else "gray") if info.grey else ("rgb48le" if info.deep else "rgb24")
    container = _open_video(info.path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's own frame threads; it decodes without the GIL
        index = 0
        try:
            # Frames before `start` are decoded and dropped: exact, and a chunk's start is a
            # small part of its length (seeking to a keyframe would need the frame's pts).
            for frame in container.decode(stream):
                if index >= stop:
                    break
                if index >= start:
                    if (frame.width, frame.height) != (info.width, info.height):
                        raise SemfuseError(f"{info.path}: frame {index} is {frame.width}x{frame.height}, "
                                           f"not {info.width}x{info.height}")
                    yield frame.to_ndarray(format=layout)
                index += 1
        except av.FFmpegError as error:
            raise SemfuseError(f"{info.path}: cannot decode frame {index} ({_reason(error)})") from None
        if index < stop:
            raise SemfuseError(f"{info.path}: ended after {index} frames, but its header says {info.frames}")
    finally:
        container.close()


def read_synchronised(infos: Sequence[StreamInfo], start: int = 0, stop: int | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[list[np.ndarray]]:
    """Frame t of every stream, together, for t in start..stop-1."""
    readers = [read_frames(info, start, stop, max_pixels) for info in infos]
    try:
        yield from (list(frames) for frames in zip(*readers))
    finally:
        for reader in readers:
            reader.close()


class prefetch:  # noqa: N801 - used as a function: `for item in prefetch(items):`
    """Iterate `items` in a thread, `depth` ahead: decoding frame t+1 overlaps fusing frame t
    (FFmpeg, OpenCV and the fusion all release the GIL). Errors are raised in the consumer;
    closing stops the thread."""

    _DONE = object()

    def __init__(self, items: Iterable, depth: int = PREFETCH_FRAMES):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iter(items),), daemon=True,
                                        name="semfuse-frame-reader")
        self._thread.start()

    def _fill(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    return
            self._put((True, self._DONE))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._put((False, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():  # exhausted, failed or closed: stays so
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self.close()
            raise item
        if item is self._DONE:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class write_behind:  # noqa: N801 - used as a function: `with write_behind(consume) as sink:`
    """`consume(item)` for each `put(item)`, in order, on a thread, with up to `depth` items
    waiting: encoding frame t overlaps fusing frame t+1 (FFmpeg and the fusion release the
    GIL). prefetch's twin on the output side.

    An error in `consume` is raised in the producer, at its next `put` or at `close`, and the
    items still waiting are dropped. `close()` waits for every item put to be consumed;
    `close(drain=False)` (leaving the block on an error, Ctrl-C included) drops those not yet
    begun. Either way the thread has ended when `close` returns, so whatever `consume` writes
    into may be discarded or committed after it."""

    _DONE = object()

    def __init__(self, consume: Callable[[Any], None], depth: int = PREFETCH_FRAMES):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._dropping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, args=(consume,), daemon=True,
                                        name="semfuse-frame-writer")
        self._thread.start()

    def _drain(self, consume: Callable[[Any], None]) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if self._dropping.is_set():
                continue
            try:
                consume(item)
            except BaseException as error:  # noqa: BLE001 - handed to the producer
                self._error = error
                self._dropping.set()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item) -> None:
        self._raise_failure()
        self._enqueue(item)
        self._raise_failure()

    def _enqueue(self, item) -> None:
        # A timeout, so that a thread that has ended, and takes nothing more, is not waited on.
        while True:
            if not self._thread.is_alive():
                return
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self, drain: bool = True) -> None:
        if not drain:
            self._dropping.set()
        try:
            self._enqueue(self._DONE)
            self._thread.join()
        except BaseException:
            # Interrupted while the last items were written: stop there, but never return
            # while the thread may still touch what `consume` writes into.
            self._dropping.set()
            self._enqueue(self._DONE)
            self._thread.join()
            raise
        if drain:
            self._raise_failure()

    def __enter__(self) -> write_behind:
        return self

    def __exit__(self, kind, *exc) -> None:
        self.close(drain=kind is None)


# --------------------------------------------------------------------------- writing

def output_kind(path: str | os.PathLike) -> str:
    """"video" for a video suffix, "folder" for none; anything else is refused."""
    suffix = Path(path).suffix.lower()
    if suffix in WRITE_VIDEO_SUFFIXES:
        return "video"
    if suffix == "":
        return "folder"
    raise SemfuseError(f"{path}: unknown video output {suffix}; use {', '.join(WRITE_VIDEO_SUFFIXES)}, "
                       "or a path without a suffix for a folder of PNG frames")


def check_video_output(path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Everything about the output that can be checked before fusing."""
    path = Path(path)
    kind = output_kind(path)
    if not path.parent.is_dir():
        raise SemfuseError(f"{path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise SemfuseError(f"{path}: folder {path.parent} is not writable")
    refuse_link_loop(path)
    if kind == "video" and path.is_dir():
        raise SemfuseError(f"{path}: is a folder")
    if kind == "video" and path.exists() and not path.is_file():
        raise SemfuseError(f"{path}: is {file_type(path.stat().st_mode)}, not a regular file; "
                           "give -o a new or a regular file")
    if kind == "folder" and path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise SemfuseError(f"{path}: exists; a frame-folder output must be a new or empty folder")
    check_not_an_input(path, inputs)
    return path


def check_video_size(path: str | os.PathLike, width: int, height: int) -> None:
    """H.264 in 4:2:0 needs even frame sizes; a frame folder takes any."""
    if output_kind(path) == "video" and (width % 2 or height % 2):
        raise SemfuseError(f"{path}: H.264 needs even frame sizes, got {width}x{height}; "
                           "write a frame folder (an output path without a suffix) instead")


def check_quality(quality: int | None, lossless: bool) -> None:
    if quality is not None and lossless:
        raise SemfuseError("--crf and --lossless exclude each other")
    if quality is not None and not (isinstance(quality, int) and 0 <= quality <= 51):
        raise SemfuseError(f"--crf must be a whole number from 0 to 51, got {quality}")


def _sweep_stale(path: Path) -> None:
    """Temp files or folders of this output left by a killed run."""
    cutoff = time.time() - STALE_SECONDS
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*{TEMP_SUFFIX}*"):
        remove_if_older(stale, cutoff)


class _CommitOnSuccess:
    """A writer used as a context manager: committed into place when the block succeeds,
    discarded (nothing left behind) when it raises."""

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        if kind is None:
            self.commit()
        else:
            self.discard()


class VideoWriter(_CommitOnSuccess):
    """H.264 into a temp file beside `path`, renamed into place by `commit`; `discard` (or
    leaving the context on an error) removes it. Frames are HxW or HxWx3, uint8 or uint16
    (stored as 8 bits: H.264 here is 8-bit)."""

    def __init__(self, path: str | os.PathLike, fps: Fraction, *, quality: int | None = None,
                 lossless: bool = False):
        check_quality(quality, lossless)
        self.path, self.fps = Path(path), Fraction(fps)
        self.options = {"qp": "0"} if lossless else {"crf": str(DEFAULT_CRF if quality is None else quality)}
        _sweep_stale(self.path)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=f"{TEMP_SUFFIX}{self.path.suffix}")
        os.close(fd)
        self._tmp = Path(tmp)
        self._container: OutputContainer | None = None
        self._stream: VideoStream | None = None
        self.frames = 0

    def _opened(self) -> tuple[OutputContainer, VideoStream]:
        if self._container is None or self._stream is None:
            raise RuntimeError(f"{self.path}: the video is not open for writing")
        return self._container, self._stream

    def _open(self, frame: np.ndarray) -> None:
        av = _import_av()
        height, width = frame.shape[:2]
        check_video_size(self.path, width, height)
        # The temp name ends in the output's suffix, which tells FFmpeg the container.
        self._container = av.open(str(self._tmp), "w")
        stream = self._container.add_stream(VIDEO_CODEC, rate=self.fps, options=dict(self.options))
        stream.width, stream.height = width, height
        # Full ("JPEG") range: grey levels pass through unchanged, where limited range would
        # rescale them. Grey frames have flat chroma, so 4:2:0 loses nothing of them.
        lossless_colour = frame.ndim == 3 and "qp" in self.options
        stream.pix_fmt = "yuvj444p" if lossless_colour else "yuvj420p"
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        av = _import_av()
        if frame.dtype == np.uint16:
            frame = ((frame.astype(np.uint32) + 128) // 257).astype(np.uint8)
        if self._container is None:
            self._open(frame)
        container, stream = self._opened()
        layout = "gray" if frame.ndim == 2 else "rgb24"
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=layout)
        for packet in stream.encode(video_frame):
            container.mux(packet)
        self.frames += 1

    def commit(self) -> Path:
        if self._container is None:
            raise SemfuseError(f"{self.path}: no frames to write")
        container, stream = self._opened()
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        self._container = None
        os.chmod(self._tmp, new_file_mode(self.path))
        os.replace(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file goes anyway
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)


class FrameFolderWriter(_CommitOnSuccess):
    """PNG frames `frame_000000.png`, ... into a temp folder beside `path`, renamed into place
    by `commit` (an empty folder at `path` is replaced)."""

    def __init__(self, path: str | os.PathLike, fps: Fraction | None = None):
        self.path = Path(path)
        self.fps = fps
        _sweep_stale(self.path)
        self._tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=TEMP_SUFFIX))
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        save_image(self._tmp / f"frame_{self.frames:06d}.png", frame)
        self.frames += 1

    def commit(self) -> Path:
        if self.frames == 0:
            raise SemfuseError(f"{self.path}: no frames to write")
        os.chmod(self._tmp, 0o777 & ~_umask())  # mkdtemp's 0o700 -> what mkdir would give
        if self.path.is_dir():
            self.path.rmdir()  # checked empty before the work; a filled one makes this fail
        os.replace(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


def open_writer(path: str | os.PathLike, fps: Fraction, *, quality: int | None = None,
                lossless: bool = False) -> VideoWriter | FrameFolderWriter:
    """A video writer or a frame-folder writer, by the output path's suffix."""
    if output_kind(path) == "video":
        return VideoWriter(path, fps, quality=quality, lossless=lossless)
    check_quality(quality, lossless)
    return FrameFolderWriter(path, fps)
