"""Hostile and unusual inputs to the image and stream readers: link loops, FIFOs, devices and
sockets, PNG text chunks, Netpbm files, EXIF orientation, still images given as streams, and
frame rates out of range. Each CLI case runs the exact command: exit status 2, one line on
stderr, nothing written, inputs intact."""
import io
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, PngImagePlugin

from semfuse_rt.engine.io.images import image_file_size, load_image, oriented, save_image
from semfuse_rt.engine.streams.video_fusion import VideoSummary
from semfuse_rt.engine.streams.video_io import MAX_FPS, MIN_FPS, VideoWriter, probe, stream_rate
from semfuse_rt.errors import SemfuseError
from conftest import run_main

SIZE = (32, 40)  # height, width


@pytest.fixture
def pair(tmp_path, rng):
    a = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    return save_image(tmp_path / "a.png", a), save_image(tmp_path / "b.png", b)


@pytest.fixture
def frame_folders(tmp_path, rng):
    """Two frame folders of three grey frames each: valid fuse-video streams."""
    folders = []
    for name in ("fa", "fb"):
        folder = tmp_path / name
        folder.mkdir()
        for index in range(3):
            save_image(folder / f"frame{index}.png", rng.integers(0, 256, SIZE, dtype=np.uint8))
        folders.append(folder)
    return folders


@pytest.fixture
def link_loop(tmp_path):
    """l1 -> l2 -> l1, for any suffix."""

    def make(suffix: str) -> Path:
        first, second = tmp_path / f"l1{suffix}", tmp_path / f"l2{suffix}"
        second.symlink_to(first.name)
        first.symlink_to(second.name)
        return first

    return make


@pytest.fixture
def fifo(tmp_path):
    """A FIFO with no writer. Should a reader open it anyway, after 20 s a writer opens it
    and closes at once, so that the test fails on its assertions instead of hanging."""
    path = tmp_path / "fifo.png"
    os.mkfifo(path)
    stop = threading.Event()

    def unblock():
        if stop.wait(20):
            return
        while not stop.wait(0.5):
            try:  # without a reader waiting, this open fails (ENXIO) rather than blocking
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()


@pytest.fixture
def unix_socket(tmp_path):
    path = tmp_path / "socket.png"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    yield path
    server.close()


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry of a folder tree: file bytes, link targets, or its kind."""
    entries: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            entries[key] = ("link", os.readlink(path))
        elif path.is_file():
            entries[key] = path.read_bytes()
        else:
            entries[key] = ("dir" if path.is_dir() else "special", path.lstat().st_mode)
    return entries


def refused(monkeypatch, capsys, folder: Path, *args) -> str:
    """Runs a command that must be refused: exit 2, one line, and the folder exactly as it was
    (no output, no temp file, no input changed). Returns the line."""
    before = snapshot(folder)
    code, out, err = run_main(monkeypatch, capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("semfuse-rt: error: ")
    assert snapshot(folder) == before
    return lines[0]


# --------------------------------------------------------------------------- symbolic link loops

def test_fuse_refuses_an_input_that_is_a_link_loop(monkeypatch, capsys, tmp_path, pair, link_loop, weights_file):
    loop = link_loop(".png")
    line = refused(monkeypatch, capsys, tmp_path, "fuse", pair[0], loop, "-o", tmp_path / "out.png",
                   "--weights", weights_file)
    assert f"{loop}: is a symbolic link loop" in line and "point the link at a file" in line


def test_fuse_refuses_an_output_that_is_a_link_loop(monkeypatch, capsys, tmp_path, pair, link_loop, weights_file):
    loop = link_loop(".png")
    line = refused(monkeypatch, capsys, tmp_path, "fuse", *pair, "-o", loop, "--weights", weights_file)
    assert f"{loop}: is a symbolic link loop" in line


def test_fuse_video_refuses_link_loops_as_input_and_output(monkeypatch, capsys, tmp_path, frame_folders,
                                                           link_loop, weights_file):
    loop = link_loop(".mp4")
    line = refused(monkeypatch, capsys, tmp_path, "fuse-video", frame_folders[0], loop, "-o", tmp_path / "out.mp4",
                   "--weights", weights_file)
    assert f"{loop}: is a symbolic link loop" in line
    line = refused(monkeypatch, capsys, tmp_path, "fuse-video", *frame_folders, "-o", loop, "--weights", weights_file)
    assert f"{loop}: is a symbolic link loop" in line


# --------------------------------------------------------------------------- FIFOs, devices, sockets

@pytest.mark.parametrize("special, kind", [("fifo", "a FIFO (named pipe)"), ("/dev/null", "a character device"),
                                           ("socket", "a socket")])
def test_fuse_refuses_what_is_not_a_regular_file(monkeypatch, capsys, tmp_path, pair, request, special, kind,
                                                weights_file):
    path = {"fifo": lambda: request.getfixturevalue("fifo"),
            "socket": lambda: request.getfixturevalue("unix_socket")}.get(special, lambda: Path(special))()
    line = refused(monkeypatch, capsys, tmp_path, "fuse", pair[0], path, "-o", tmp_path / "out.png",
                   "--weights", weights_file)
    assert f"{path}: is {kind}, not an image; give an image file (PNG, TIFF, JPEG, BMP, PGM or PPM)" in line


def test_fuse_refuses_dev_zero_before_reading_it(tmp_path, pair, weights_file):
    """The exact command through the console script, its memory capped: a reader that tried
    to read /dev/zero to its end would fail on the cap in seconds, not fill the machine."""
    script = shutil.which("semfuse-rt", path=os.path.dirname(sys.executable)) or shutil.which("semfuse-rt")
    assert script, "the semfuse-rt console script is not installed"
    out = tmp_path / "out.png"
    cap = 6 * 1024 ** 3

    def capped():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    run = subprocess.run([script, "fuse", str(pair[0]), "/dev/zero", "-o", str(out), "--weights", str(weights_file)],
                         capture_output=True, text=True, timeout=300, preexec_fn=capped)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "/dev/zero: is a character device, not an image" in lines[0]
    assert not out.exists()


def test_fuse_refuses_an_output_that_is_a_fifo(monkeypatch, capsys, tmp_path, pair, fifo, weights_file):
    line = refused(monkeypatch, capsys, tmp_path, "fuse", *pair, "-o", fifo, "--weights", weights_file)
    assert f"{fifo}: is a FIFO (named pipe), not a regular file; write the output to a new or a regular file" in line


@pytest.mark.parametrize("special, kind", [("fifo", "a FIFO (named pipe)"), ("/dev/null", "a character device")])
def test_fuse_video_refuses_what_is_neither_a_video_nor_a_folder(monkeypatch, capsys, tmp_path, frame_folders,
                                                                 request, special, kind, weights_file):
    path = request.getfixturevalue("fifo") if special == "fifo" else Path(special)
    line = refused(monkeypatch, capsys, tmp_path, "fuse-video", frame_folders[0], path, "-o", tmp_path / "out.mp4",
                   "--weights", weights_file)
    assert f"{path}: is {kind}, not a video; give a video file or a folder of frames" in line


def test_fuse_video_refuses_an_output_that_is_a_fifo(monkeypatch, capsys, tmp_path, frame_folders, weights_file):
    output = tmp_path / "out.mp4"
    os.mkfifo(output)
    line = refused(monkeypatch, capsys, tmp_path, "fuse-video", *frame_folders, "-o", output,
                   "--weights", weights_file)
    assert f"{output}: is a FIFO (named pipe), not a regular file; give -o a new or a regular file" in line


def test_the_image_reader_refuses_special_files_for_every_command(tmp_path, fifo, unix_socket):
    """load_image and image_file_size are what fuse, fuse-batch, eval, cam and frame folders read
    with; none of them opens a FIFO, a device or a socket for reading."""
    for path in (fifo, unix_socket, Path("/dev/zero"), tmp_path):
        for read in (load_image, image_file_size):
            with pytest.raises(SemfuseError, match="not an image; give an image file"):
                read(path)


# --------------------------------------------------------------------------- PNG text chunks

@pytest.mark.parametrize("chunk", ["zTXt", "iTXt"])
def test_a_png_with_megabytes_of_compressed_text_is_read(tmp_path, rng, chunk):
    image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    text = "".join(f"{index:08d} " for index in range(3_000_000 // 9))  # 3 MB, inflated from ~0.7 MB
    info = PngImagePlugin.PngInfo()
    if chunk == "zTXt":
        info.add_text("Comment", text, zip=True)
    else:
        info.add_itxt("Comment", text, zip=True)
    path = tmp_path / "text.png"
    Image.fromarray(image).save(path, pnginfo=info)
    with pytest.raises(ValueError, match="MAX_TEXT_CHUNK"):  # what Pillow alone says of it
        Image.open(path)
    assert np.array_equal(load_image(path), image)
    assert image_file_size(path) == (SIZE[1], SIZE[0])
    # Pillow's own guard stays as it was for the rest of the process.
    assert PngImagePlugin.MAX_TEXT_CHUNK == ImageFile.SAFEBLOCK


def test_the_pixel_limit_still_holds_for_a_png_with_text(tmp_path):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    text = zlib.compress(b"x" * 3_000_000)
    forged = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) \
        + chunk(b"zTXt", b"Comment\0\0" + text) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path = tmp_path / "huge.png"
    path.write_bytes(forged)
    with pytest.raises(SemfuseError, match="100000x100000 is 10000 MP, over the limit of 250 MP.*--max-pixels"):
        load_image(path)


# --------------------------------------------------------------------------- PGM and PPM

def _netpbm(magic: bytes, max_value: int, samples: np.ndarray) -> bytes:
    height, width = samples.shape[:2]
    header = b"%s\n# made by a test\n%d %d\n%d\n" % (magic, width, height, max_value)
    if magic in (b"P2", b"P3"):
        return header + b" ".join(b"%d" % value for value in samples.ravel()) + b"\n"
    return header + samples.astype(">u2" if max_value > 255 else "u1").tobytes()


@pytest.mark.parametrize("magic, channels", [(b"P5", 1), (b"P6", 3), (b"P2", 1), (b"P3", 3)])
@pytest.mark.parametrize("max_value, dtype", [(255, np.uint8), (15, np.uint8), (65535, np.uint16),
                                              (4095, np.uint16)])
def test_pgm_and_ppm_are_read_at_full_range(tmp_path, rng, magic, channels, max_value, dtype):
    shape = (5, 7, 3) if channels == 3 else (5, 7)
    samples = rng.integers(0, max_value + 1, shape)
    path = tmp_path / ("image.ppm" if channels == 3 else "image.pgm")
    path.write_bytes(_netpbm(magic, max_value, samples))
    image = load_image(path)
    full = np.iinfo(dtype).max
    assert image.dtype == dtype and image.shape == shape
    assert np.array_equal(image, np.rint(samples * (full / max_value)).astype(dtype))
    assert image_file_size(path) == (7, 5)


@pytest.mark.parametrize("content, message", [
    (b"P5\n4 3\n255\n" + bytes(5), "truncated PGM file"),
    (b"P3\n1 1\n15\n1 2 x\n", "corrupt PPM file"),
    (b"P2\n2 1\n15\n3 16\n", "corrupt PGM file \\(a sample is outside 0..15\\)"),
    (b"P5\n4 3\n70000\n", "damaged PGM header")])
def test_damaged_netpbm_files_get_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.pgm"
    path.write_bytes(content)
    with pytest.raises(SemfuseError, match=message):
        load_image(path)


def test_fuse_reads_pgm_inputs(monkeypatch, capsys, tmp_path, rng, weights_file):
    inputs = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.pgm"
        path.write_bytes(_netpbm(b"P5", 4095, rng.integers(0, 4096, SIZE)))
        inputs.append(path)
    out = tmp_path / "out.png"
    code, _, err = run_main(monkeypatch, capsys, "fuse", *inputs, "-o", out, "--weights", weights_file,
                            "--steps", "1", "--backend", "torch", "-q")
    assert code in (0, None), err
    fused = load_image(out)
    assert fused.shape == SIZE and fused.dtype == np.uint16


def test_a_frame_folder_of_pgm_files_is_a_stream(tmp_path, rng):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):
        (folder / f"frame{index}.pgm").write_bytes(_netpbm(b"P5", 255, rng.integers(0, 256, SIZE)))
    info = probe(folder)
    assert (info.kind, info.frames, info.width, info.height, info.grey) == ("folder", 3, SIZE[1], SIZE[0], True)


# --------------------------------------------------------------------------- EXIF orientation

def _with_orientation(image: np.ndarray, orientation: int, path: Path, **options) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image).save(path, exif=exif.tobytes(), **options)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied_as_viewers_do(tmp_path, rng, orientation, suffix):
    stored = np.repeat(np.repeat(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), 4, 0), 4, 1)  # JPEG-friendly
    path = _with_orientation(stored, orientation, tmp_path / f"photo{suffix}", quality=100, subsampling=0)
    with Image.open(path) as opened:
        viewed = np.asarray(ImageOps.exif_transpose(opened))
    image = load_image(path)
    assert image.shape == viewed.shape
    assert np.abs(image.astype(int) - viewed).max() <= (0 if suffix == ".png" else 3)
    assert image_file_size(path) == (viewed.shape[1], viewed.shape[0])


def test_oriented_turns_an_array_as_pillow_does(rng):
    stored = rng.integers(0, 256, (3, 5), dtype=np.uint8)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        picture = Image.fromarray(stored)
        picture.info["exif"] = exif.tobytes()
        assert np.array_equal(oriented(stored, orientation), np.asarray(ImageOps.exif_transpose(picture)))


def test_a_rotated_phone_photo_fuses_with_its_upright_partner(monkeypatch, capsys, tmp_path, rng, weights_file):
    """An upright 32x40 (HxW) image and a JPEG stored as 40x32 with orientation 6: the same
    size as viewed, so they fuse, upright."""
    upright = save_image(tmp_path / "upright.png", rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))
    stored = np.rot90(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8), 1)  # what the camera wrote
    phone = _with_orientation(np.ascontiguousarray(stored), 6, tmp_path / "phone.jpg", quality=95)
    assert image_file_size(phone) == image_file_size(upright) == (SIZE[1], SIZE[0])
    out = tmp_path / "out.png"
    code, _, err = run_main(monkeypatch, capsys, "fuse", upright, phone, "-o", out, "--weights", weights_file,
                            "--steps", "1", "--backend", "torch", "-q")
    assert code in (0, None), err
    assert load_image(out).shape == (*SIZE, 3)


def test_a_damaged_exif_block_leaves_the_image_as_stored(tmp_path, rng):
    stored = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "PNG", exif=b"Exif\0\0MM\0*garbage")
    path = tmp_path / "odd.png"
    path.write_bytes(buffer.getvalue())
    assert np.array_equal(load_image(path), stored)


# --------------------------------------------------------------------------- fuse-video's inputs and rate

def test_fuse_video_refuses_still_images(monkeypatch, capsys, tmp_path, pair, weights_file):
    line = refused(monkeypatch, capsys, tmp_path, "fuse-video", *pair, "-o", tmp_path / "out.mp4",
                   "--weights", weights_file)
    assert f"{pair[0]}: is a still image (PNG); fuse-video takes video files or folders of frames; " \
           "fuse still images with `semfuse-rt fuse`" in line


def test_a_one_frame_video_is_fused_and_summarised_without_nan(monkeypatch, capsys, tmp_path, rng, weights_file):
    videos = []
    for name in ("a", "b"):
        with VideoWriter(tmp_path / f"{name}.mp4", Fraction(10), lossless=True) as writer:
            writer.write(rng.integers(0, 256, SIZE, dtype=np.uint8))
        videos.append(tmp_path / f"{name}.mp4")
    out = tmp_path / "out.mp4"
    code, stdout, err = run_main(monkeypatch, capsys, "fuse-video", *videos, "-o", out, "--weights", weights_file,
                                 "--backend", "torch", "--workers", "1", "-q")
    assert code in (0, None), err
    assert "fused 1 frame of 2 streams" in stdout and "no frame rate or flicker to measure" in stdout
    assert "nan" not in stdout.lower()
    assert probe(out).frames == 1


def test_the_summary_never_prints_nan():
    summary = VideoSummary(output=Path("out.mp4"), frames=1, fps=Fraction(25), seconds=2.0, first_frame_seconds=2.0,
                           warm_frames=0, flicker=float("nan"), method="max", backend="ort", preset="blend")
    assert "nan" not in summary.summary(2).lower()


@pytest.mark.parametrize("fps", ["inf", "1e308", "1e-9", "nan", "0", "-3", "-inf", "1000.5"])
def test_fuse_video_refuses_a_rate_out_of_range(monkeypatch, capsys, tmp_path, frame_folders, fps, weights_file):
    line = refused(monkeypatch, capsys, tmp_path, "fuse-video", *frame_folders, "-o", tmp_path / "out.mp4",
                   f"--fps={fps}", "--weights", weights_file)
    assert "--fps must be from 0.01 to 1000 frames a second" in line


def test_rates_in_range_are_written_as_asked():
    assert stream_rate([], MIN_FPS) == Fraction(1, 100)
    assert stream_rate([], MAX_FPS) == Fraction(1000)
    assert stream_rate([], 29.97) == Fraction(2997, 100)
    assert stream_rate([], 30000 / 1001) == Fraction(30000, 1001)
    assert stream_rate([], 0.5) == Fraction(1, 2)


def test_folders_yield_pgm_and_ppm_sets_that_load(tmp_path):
    from semfuse_rt.engine.evaluation.datasets import discover_sets

    for name in ("x_A.pgm", "x_B.pgm"):
        (tmp_path / name).write_bytes(b"P5\n4 3\n255\n" + bytes(range(12)))
    for name in ("y_A.ppm", "y_B.ppm"):
        (tmp_path / name).write_bytes(b"P6\n2 2\n255\n" + bytes(range(12)))
    sets = {s.name: s.sources for s in discover_sets(tmp_path).sets}
    assert sorted(sets) == ["x", "y"]
    assert [load_image(path).shape for path in sets["x"] + sets["y"]] == [(3, 4), (3, 4), (2, 2, 3), (2, 2, 3)]
