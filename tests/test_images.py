import cv2
import numpy as np
import pytest

from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.io.images import load_image, save_image


@pytest.mark.parametrize("extension", [".png", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(13, 17), (13, 17, 3)])
def test_lossless_round_trip_keeps_mode_and_depth(tmp_path, rng, extension, dtype, shape):
    image = rng.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)
    path = save_image(tmp_path / f"x{extension}", image)
    back = load_image(path)
    assert back.dtype == dtype and back.shape == shape
    assert np.array_equal(back, image)


def test_colour_is_rgb_order(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 200  # red
    save_image(tmp_path / "red.png", image)
    assert cv2.imread(str(tmp_path / "red.png"))[0, 0].tolist() == [0, 0, 200]  # OpenCV is BGR
    assert load_image(tmp_path / "red.png")[0, 0].tolist() == [200, 0, 0]


def test_alpha_is_dropped(tmp_path):
    bgra = np.zeros((3, 3, 4), np.uint8)
    bgra[..., 2] = 90
    bgra[..., 3] = 10
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    assert load_image(tmp_path / "a.png")[0, 0].tolist() == [90, 0, 0]


def test_jpeg_refuses_16_bit_and_writes_nothing(tmp_path):
    with pytest.raises(SemfuseError, match="16-bit"):
        save_image(tmp_path / "x.jpg", np.zeros((4, 4), np.uint16))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"), (b"not an image at all", "not an image in a known format"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "damaged PNG header"),
    (b"GIF89a" + b"\0" * 40, "GIF images \\(animated or not\\) are not supported")])
def test_corrupt_files_get_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(SemfuseError, match=message):
        load_image(path)


def _encoded(extension, image):
    ok, data = cv2.imencode(extension, image)
    assert ok
    return data.tobytes()


@pytest.fixture
def photo(rng):
    """A smooth colour image, so codecs produce files of realistic structure."""
    y, x = np.mgrid[0:96, 0:128]
    base = np.stack([x * 2, y * 2, (x + y)], axis=2).astype(np.float64)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("extension", [".jpg", ".png", ".tif"])
@pytest.mark.parametrize("keep", [0.33, 0.9])
def test_truncated_files_are_refused(tmp_path, photo, extension, keep):
    data = _encoded(extension, photo)
    path = tmp_path / f"cut{extension}"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(SemfuseError, match="truncated"):
        load_image(path)
    path.write_bytes(data)
    assert load_image(path).shape == photo.shape


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_corrupt_image_data_is_refused(tmp_path, photo, extension, capfd):
    data = bytearray(_encoded(extension, photo))
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(range(64))
    path = tmp_path / f"bad{extension}"
    path.write_bytes(bytes(data))
    with pytest.raises(SemfuseError, match="corrupt"):
        load_image(path)
    assert capfd.readouterr().err == ""  # the codec's own complaint is not shown


def test_jpeg_with_a_thumbnail_and_trailing_bytes_is_complete(photo):
    from semfuse_rt.engine.io.images import jpeg_scan_is_complete

    data = _encoded(".jpg", photo)
    thumbnail = _encoded(".jpg", photo[::8, ::8])
    app1 = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail  # an EOI inside APP1
    with_thumbnail = data[:2] + app1 + data[2:]
    assert jpeg_scan_is_complete(with_thumbnail) and jpeg_scan_is_complete(data + b"\0" * 16)
    cut = with_thumbnail[:len(with_thumbnail) - len(data) // 2]
    assert not jpeg_scan_is_complete(cut)


def test_header_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    forged = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path = tmp_path / "huge.png"
    path.write_bytes(forged)
    with pytest.raises(SemfuseError, match="100000x100000 is 10000 MP, over the limit of 250 MP.*--max-pixels"):
        load_image(path)
    with pytest.raises(SemfuseError, match="over the limit of 0.001 MP"):
        load_image(path, max_pixels=1000)


def test_float_images_are_an_unsupported_mode(tmp_path):
    path = tmp_path / "float.tif"
    cv2.imwrite(str(path), np.zeros((4, 4), np.float32))
    with pytest.raises(SemfuseError, match="unsupported mode"):
        load_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(SemfuseError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(SemfuseError, match="folder"):
        load_image(tmp_path)
