"""Tiles of a `pyramid-blend` start take their low frequencies from a whole-image preview
(engine/large/tile_tone.py), so a tiled exposure stack keeps one tone instead of one per tile."""
import numpy as np
import torch

from conftest import EXAMPLES
from semfuse_rt.engine.large import tile_tone
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.start.initialisation import initial_image
from semfuse_rt.engine.io.sources import prepare
from semfuse_rt.engine.large.tile_tone import PreviewTone


def _exposures():
    scene = load_image(EXAMPLES / "lytro-01-A.jpg")[60:316, 40:360].astype(float)
    dark = np.clip(scene * 0.45, 0, 255).astype(np.uint8)
    bright = np.clip(scene * 1.8 + 20, 0, 255).astype(np.uint8)
    return [dark, bright]


def _start(pixels):
    return initial_image(pixels, "pyramid-blend")


def test_toned_tile_starts_follow_the_whole_images_start():
    images = _exposures()
    whole = _start(torch.from_numpy(prepare(images).pixels))[0]
    tone = PreviewTone(images, _start)
    assert tone.scale == 1.0
    y0, y1, x0, x1 = crop = (40, 168, 100, 260)
    own = _start(torch.from_numpy(prepare([i[y0:y1, x0:x1] for i in images]).pixels))
    toned = tone.tile_start(own, crop)[0]
    inner = (slice(None), slice(24, -24), slice(24, -24))  # away from the crop's own borders
    want = whole[:, y0:y1, x0:x1][inner]
    own_error = (own[0][inner] - want).abs().mean()
    toned_error = (toned[inner] - want).abs().mean()
    assert own_error > 2.0  # the crop's own deep pyramid finds its own tone
    assert toned_error < 0.25 * own_error


def test_a_shrunk_preview_is_resampled_onto_the_crop_in_place(monkeypatch):
    monkeypatch.setattr(tile_tone, "PREVIEW_PIXELS", 40 * 30)
    ramp = np.tile(np.linspace(20, 230, 160), (120, 1)).astype(np.uint8)
    tone = PreviewTone([ramp, ramp], lambda pixels: pixels.mean(dim=0, keepdim=True))
    assert tone.scale == 0.25 and tone.sigma == 8.0
    low = tone.low_frequencies((30, 90, 40, 120))
    assert low.shape == (3, 60, 80)
    # a linear ramp survives area averaging, the blur and bilinear resampling away from borders
    assert np.abs(low[0] - ramp[30:90, 40:120]).max() < 1.5


def test_a_tiled_blend_fuse_has_the_tone_of_the_whole_one(random_vgg_weights):
    images = _exposures()
    options = dict(backend="ort", weights=random_vgg_weights, preset="blend", steps=2)
    with Fuser(**options) as whole, Fuser(tile=96, **options) as tiled:
        want, got = whole(images), tiled(images)
    assert got.tiles > 1
    assert np.abs(got.image.astype(float) - want.image).mean() < 1.0
