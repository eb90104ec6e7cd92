"""The blend start in numpy and OpenCV (engine/start/pyramid_blend_cpu.py) against the torch rule
(engine/start/pyramid_blend.py) in float64, the parts it computes differently, that it loads no
torch, and that a fuse on the CPU runs it."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from conftest import dataset
from semfuse_rt.engine.start import pyramid_blend as pb
from semfuse_rt.engine.start import pyramid_blend_cpu as pc
from semfuse_rt.engine.start.blend_rule import RULE
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.start.initialisation import STARTS
from semfuse_rt.engine.start.pyramid_depth import WHOLE_COARSEST
from semfuse_rt.engine.io.sources import finish, prepare

# Before rounding to 8 bits. Measured over the 29 shared sets of every category, both forms:
# at most 0.054 grey levels, but for two sets where the float64 rule's own hard choice is
# decided by rounding (medical c04, see the last test; multifocus_triple lytro-01, 0.93 at 2
# values of 811,200), where the torch float32 start deviates as much (4.6 and 0.78). The
# torch float32 start itself is over 0.5 on 8 of the 29 sets (up to 4.4).
TOLERANCE = 0.5


def _reference(pixels: np.ndarray, coarsest: float | None) -> np.ndarray:
    return pb.agreement_blend(torch.from_numpy(pixels).double(), coarsest=coarsest)[0].numpy()


def _assert_parity(pixels: np.ndarray, coarsest: float | None, tolerance: float = TOLERANCE) -> float:
    result = pc.agreement_blend_cpu(pixels, coarsest=coarsest)
    assert result.shape == (1, *pixels.shape[1:]) and result.dtype == np.float32
    difference = float(np.abs(result[0] - _reference(pixels, coarsest)).max())
    assert difference <= tolerance, difference
    return difference


@pytest.mark.parametrize("coarsest", [None, WHOLE_COARSEST, 1])
@pytest.mark.parametrize(("count", "height", "width"), [(2, 67, 91), (3, 40, 33), (5, 21, 64), (2, 2, 9)])
def test_random_inputs_blend_as_the_float64_rule(rng, coarsest, count, height, width):
    pixels = (rng.random((count, 3, height, width)) * 255).astype(np.float32)
    assert _assert_parity(pixels, coarsest) < 0.01  # measured: 1e-4 at most


def test_flat_and_equal_inputs_tie_to_the_first_and_rule_changes_apply(rng):
    flat = np.stack([np.full((3, 16, 16), 100.0), np.full((3, 16, 16), 150.0)]).astype(np.float32)
    np.testing.assert_allclose(pc.agreement_blend_cpu(flat)[0], flat[0], atol=1e-4)
    pixels = (rng.random((3, 3, 30, 41)) * 255).astype(np.float32)
    for rule in (replace(RULE, majority=1), replace(RULE, sharpen=0.0, gate_window=5), replace(RULE, majority=4)):
        expected = pb.agreement_blend(torch.from_numpy(pixels).double(), **asdict(rule))[0].numpy()
        assert np.abs(pc.agreement_blend_cpu(pixels, rule=rule)[0] - expected).max() < 0.01
    one = pixels[:1]
    assert np.array_equal(pc.agreement_blend_cpu(one), one)


@pytest.mark.parametrize("paths", [
    ("infrared_visible/Camp_IR.png", "infrared_visible/Camp_Vis.png"),  # grey
    ("medical/c01_1.tif", "medical/c01_2.tif"),  # grey, black backgrounds
    ("multifocus/lytro-01-A.jpg", "multifocus/lytro-01-B.jpg"),  # colour
    ("multiexposure/garage/garage1.jpg", "multiexposure/garage/garage3.jpg", "multiexposure/garage/garage5.jpg"),
    ("multifocus_triple/lytro-02-A.jpg", "multifocus_triple/lytro-02-B.jpg", "multifocus_triple/lytro-02-C.jpg"),
])
@pytest.mark.parametrize("coarsest", [None, WHOLE_COARSEST])
def test_shared_sets_blend_as_the_float64_rule(paths, coarsest):
    pixels = prepare([load_image(dataset(*path.split("/"))) for path in paths]).pixels
    _assert_parity(pixels, coarsest)


def test_the_pyramid_steps_are_the_torch_modules():
    rng = np.random.default_rng(5)
    for height in range(1, 12):
        for width in range(1, 12):
            plane = rng.random((height, width)).astype(np.float32)
            tensor = torch.from_numpy(plane)[None, None]
            expected = pb._reduce_last(pb._reduce_last(tensor).transpose(-1, -2)).transpose(-1, -2)[0, 0].numpy()
            np.testing.assert_allclose(pc.reduce(plane), expected, atol=1e-6, rtol=0)
            for size in ((2 * height - 1, 2 * width - 1), (2 * height, 2 * width - 1),
                         (2 * height - 1, 2 * width), (2 * height, 2 * width)):
                if min(size) > 0:
                    expected = pb.expand(tensor, size)[0, 0].numpy()
                    np.testing.assert_allclose(pc.expand(plane, size), expected, atol=1e-6, rtol=0)


def test_row_strips_compute_what_one_call_does(monkeypatch, rng):
    plane = rng.random((203, 64)).astype(np.float32)
    stacks = [(rng.random((count, 3, height, width)) * 255).astype(np.float32)
              for count, height, width in ((2, 203, 64), (3, 97, 45), (2, 129, 77))]

    def computed():
        filtered = [pc.gaussian(plane, 8.0), pc.local_contrast(plane)]
        return filtered + [pc.agreement_blend_cpu(pixels, coarsest=coarsest)
                           for pixels in stacks for coarsest in (None, WHOLE_COARSEST)]
    monkeypatch.setattr(pc, "PARALLEL_PIXELS", 1 << 40)
    whole = computed()
    monkeypatch.setattr(pc, "PARALLEL_PIXELS", 0)
    monkeypatch.setattr(pc, "cores", lambda: 3)
    monkeypatch.setattr(pc, "CACHE_ROWS", 16)  # odd sizes' last strips, levels of 2 strips
    for one, split in zip(whole, computed(), strict=True):
        assert np.array_equal(one, split)


def test_memory_does_not_grow_with_the_number_of_inputs(rng):
    peaks = {}
    for count in (4, 12):
        pixels = (rng.random((count, 3, 120, 160)) * 255).astype(np.float32)
        tracemalloc.start()
        pc.agreement_blend_cpu(pixels)
        peaks[count] = tracemalloc.get_traced_memory()[1] / (120 * 160 * 4)  # in planes
        tracemalloc.stop()
    assert peaks[12] <= peaks[4] + 0.5, peaks  # measured: 23.3 planes for both (22.3 for 3 inputs)


def test_it_imports_no_torch(tmp_path):
    script = textwrap.dedent("""
        import sys
        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'torch':
                    raise ImportError('torch is not installed here')
        sys.meta_path.insert(0, Refuse())
        import numpy as np
        from semfuse_rt.engine.start.initialisation import STARTS
        pixels = np.random.default_rng(0).random((2, 3, 40, 50), dtype=np.float32) * 255
        for name in ('pyramid-blend', 'whole-pyramid-blend'):
            assert STARTS[name].cpu_image(pixels).shape == (1, 3, 40, 50)
        assert not any(module.split('.')[0] == 'torch' for module in sys.modules)
        print('no torch')
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "no torch" in run.stdout, run.stderr


@pytest.mark.parametrize(("preset", "init", "coarsest"), [("blend", "pyramid-blend", None),
                                                          ("exposure", "whole-pyramid-blend", WHOLE_COARSEST)])
@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_a_fuse_on_the_cpu_is_the_numpy_start_finished(random_vgg_weights, rng, preset, init, coarsest, backend):
    images = [rng.integers(0, 256, (37, 45, 3), dtype=np.uint8) for _ in range(2)]
    with Fuser("max", preset=preset, backend=backend, weights=random_vgg_weights) as fuser:
        assert fuser.init == init and fuser.schedule.steps == 0
        result = fuser(images)
    sources = prepare(images)
    assert np.array_equal(result.image, finish(pc.agreement_blend_cpu(sources.pixels, coarsest=coarsest)[0], sources))
    assert STARTS[init].cpu_image is not None


def test_where_the_float64_rule_decides_a_tie_by_rounding_the_blends_differ_as_the_torch_float32_one():
    """CT/MR c04: in black areas both inputs' contrast is 0 but for the float64 rule's
    rounding (about 1e-10), which then chooses the sharper input; the float32 forms see a tie.
    Through the pyramid's low bands that moves up to 4.6 grey levels near the skull, for the
    numpy and the torch float32 start alike."""
    pixels = prepare([load_image(dataset("medical", f"c04_{i}.tif")) for i in (1, 2)]).pixels
    reference = _reference(pixels, None)
    numpy_start = np.abs(pc.agreement_blend_cpu(pixels)[0] - reference)
    torch_start = np.abs(pb.agreement_blend(torch.from_numpy(pixels))[0].numpy() - reference)
    assert numpy_start.max() <= torch_start.max() + 0.01
    assert (numpy_start > TOLERANCE).sum() <= (torch_start > TOLERANCE).sum()
