"""docs/method.md's input rules: grey, colour and mixed sets, bit depths, and the way back."""
import numpy as np
import pytest

from semfuse_rt.engine.io.colour import rgb_to_ycbcr
from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.io.sources import finish, prepare


def test_grey_inputs_are_replicated_and_come_back_grey(rng):
    a = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    sources = prepare([a, a])
    assert sources.mode == "grey" and sources.pixels.shape == (2, 3, 6, 7)
    assert np.array_equal(sources.pixels[0, 2], a.astype(np.float32))
    out = finish(sources.pixels[0], sources)
    assert out.dtype == np.uint8 and np.array_equal(out, a)


def test_colour_round_trip(rng):
    a = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    sources = prepare([a, a, a])
    assert sources.mode == "colour" and sources.count == 3
    assert np.array_equal(finish(sources.pixels[1], sources), a)


def test_sixteen_bit_is_scaled_to_0_255_and_back(rng):
    a = rng.integers(0, 65536, (5, 4), dtype=np.uint16)
    b = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    sources = prepare([a, b])
    assert sources.dtype == np.uint16
    assert sources.pixels.max() <= 255.0
    back = finish(sources.pixels[0], sources)
    assert back.dtype == np.uint16 and np.abs(back.astype(int) - a).max() <= 2


def test_mixed_fuses_luma_and_keeps_the_colour_inputs_chroma(rng):
    colour = rng.integers(30, 220, (6, 6, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    sources = prepare([grey, colour])
    assert sources.mode == "mixed"
    # Both planes the network sees are grey (equal channels).
    assert np.allclose(sources.pixels[:, 0], sources.pixels[:, 1])
    # Finishing the colour input's own luma gives the colour input back (up to rounding).
    back = finish(sources.pixels[1], sources)
    assert back.shape == colour.shape and np.abs(back.astype(int) - colour).max() <= 1
    # Finishing the grey input's luma keeps the colour input's chroma.
    fused = finish(sources.pixels[0], sources)
    chroma = rgb_to_ycbcr(fused.astype(float))[..., 1:]
    want = rgb_to_ycbcr(colour.astype(float))[..., 1:]
    clipped = (fused == 0) | (fused == 255)
    ok = ~clipped.any(axis=2)
    assert np.abs(chroma - want)[ok].max() < 2.0


def test_size_mismatch_names_both_sizes():
    with pytest.raises(SemfuseError, match="input 1 is 8x6 but input 2 is 9x6"):
        prepare([np.zeros((6, 8), np.uint8), np.zeros((6, 9), np.uint8)])


def test_needs_two_inputs_and_integer_images():
    with pytest.raises(SemfuseError, match="at least 2"):
        prepare([np.zeros((6, 8), np.uint8)])
    with pytest.raises(SemfuseError, match="unsupported mode"):
        prepare([np.zeros((6, 8), np.float32), np.zeros((6, 8), np.float32)])
