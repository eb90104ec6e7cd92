"""The one Gaussian blur (semfuse_rt/gaussian_blur.py): its taps are OpenCV's kernel, its
border rules are numpy's padding modes, and its torch form, by either route, is OpenCV's blur
on fresh planes, including planes narrower than the kernel."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from semfuse_rt import gaussian_blur
from semfuse_rt.gaussian_blur import Border, fold_indices, gaussian_taps, opencv_blur, tap_count, torch_blur

SIGMAS = [0.7, 1.5, 2.5, 3.0, 4.0, 8.0, 12.3]
NUMPY_MODE = {Border.REFLECT: "symmetric", Border.REFLECT_101: "reflect"}


@pytest.mark.parametrize("sigma", SIGMAS)
def test_the_taps_are_opencvs_impulse_response(sigma):
    # A unit impulse far from the borders comes back as the kernel itself, so its support
    # shows the tap count cv2.GaussianBlur chose for itself.
    side = 2 * tap_count(sigma) + 1
    impulse = np.zeros((side, side), np.float32)
    impulse[side // 2, side // 2] = 1
    response = cv2.GaussianBlur(impulse, (0, 0), sigma)
    taps = gaussian_taps(sigma)
    assert taps.dtype == np.float32 and len(taps) == tap_count(sigma) and len(taps) % 2 == 1
    assert np.count_nonzero(response[side // 2]) == len(taps)
    around = slice(side // 2 - len(taps) // 2, side // 2 + len(taps) // 2 + 1)
    assert np.abs(response[around, around] - np.outer(taps, taps)).max() <= 1e-7
    assert abs(float(taps.sum()) - 1) <= 1e-6


@pytest.mark.parametrize("border", list(Border))
@pytest.mark.parametrize("length, pad", [(1, 4), (2, 5), (5, 2), (5, 11), (7, 3), (3, 20)])
def test_folded_indices_are_numpys_padding(border, length, pad):
    want = np.pad(np.arange(length), pad, mode=NUMPY_MODE[border])
    got = fold_indices(torch.arange(-pad, length + pad), length, border).numpy()
    assert np.array_equal(got, want)


@pytest.mark.parametrize("route", ["convolution", "shifted sums"])
@pytest.mark.parametrize("border", list(Border))
@pytest.mark.parametrize("height, width, sigma", [(40, 52, 8.0), (5, 7, 8.0), (31, 17, 2.5), (4, 4, 4.0),
                                                  (64, 9, 0.7), (1, 9, 3.0), (23, 1, 1.5)])
def test_the_torch_form_is_opencvs_blur(monkeypatch, rng, route, border, height, width, sigma):
    # The torch form takes the convolution on the CPU and shifted sums on a GPU: both run here.
    monkeypatch.setattr(gaussian_blur, "_uses_convolution", lambda planes: route == "convolution")
    planes = rng.random((2, 3, height, width)).astype(np.float32)
    want = np.stack([[opencv_blur(plane, sigma, border) for plane in image] for image in planes])
    got = torch_blur(torch.from_numpy(planes), torch.from_numpy(gaussian_taps(sigma)), border).numpy()
    assert got.shape == planes.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 2e-6


def test_the_opencv_form_blurs_each_channel_of_a_colour_image(rng):
    image = rng.random((19, 23, 3)).astype(np.float32)
    blurred = opencv_blur(image, 3.0, Border.REFLECT_101)
    for channel in range(3):
        alone = cv2.GaussianBlur(image[..., channel], (0, 0), 3.0, borderType=cv2.BORDER_REFLECT_101)
        # OpenCV 5 vectorises across the channels of one image and sums in another order.
        assert np.abs(blurred[..., channel] - alone).max() <= 1e-6
