import cv2
import numpy as np
import pytest

from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.images import load_image, save_image


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


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_files_get_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(SemfuseError, match="not a readable image"):
        load_image(path)


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
