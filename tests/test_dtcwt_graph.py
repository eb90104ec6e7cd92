"""The DT-CWT start image as torch ops: the transform against the `dtcwt` package, the fusion
against engine/evaluation/baselines.py, the start image against engine/start/initialisation.py, and the ONNX
Runtime graph against the torch module."""
import logging

import numpy as np
import onnxruntime as ort
import pytest
import torch

from semfuse_rt.engine.evaluation.baselines import dtcwt_choose_max
from semfuse_rt.export.graphs import dtcwt_graph
from semfuse_rt.export.graphs.dtcwt_graph import DtcwtChooseMax, DtcwtStartGraph, DtcwtTransform, StreamedDtcwtChooseMax, \
    dtcwt_start, export_dtcwt_graph

# The package's own padding of odd sizes calls the deprecated logging.warn.
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' function is deprecated:DeprecationWarning")

SIZES = [(64, 64), (50, 70), (37, 53)]


@pytest.fixture(params=["slices", "convolutions"])
def filtering(request, monkeypatch):
    """Both ways of filtering: shifted slices (eager CPU) and convolutions (GPU, ONNX)."""
    if request.param == "convolutions":
        monkeypatch.setattr(dtcwt_graph, "_use_taps", lambda x: False)
    return request.param


@pytest.fixture(scope="module")
def package():
    import dtcwt

    # The package logs a warning on the root logger for every odd-sized image.
    logging.disable(logging.WARNING)
    yield dtcwt
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("graphs")
    return {verify: export_dtcwt_graph(verify, directory) for verify in (0, 3)}


def as_complex(real, imag):
    return (real + 1j * imag).permute(1, 2, 0).numpy()


def test_forward_and_inverse_match_the_package(rng, package, filtering):
    transform = DtcwtTransform()
    reference = package.Transform2d(biort="near_sym_a", qshift="qshift_a")
    for shape in SIZES + [(9, 6)]:
        planes = rng.standard_normal((2, *shape))
        lowpass, highpasses = transform(torch.from_numpy(planes))
        for n in range(2):
            pyramid = reference.forward(planes[n], nlevels=4)
            assert lowpass[n].shape == pyramid.lowpass.shape
            assert np.abs(lowpass[n].numpy() - pyramid.lowpass).max() <= 1e-6
            assert len(highpasses) == 4
            for level, (real, imag) in enumerate(highpasses):
                ours = as_complex(real[n], imag[n])
                assert ours.shape == pyramid.highpasses[level].shape
                assert np.abs(ours - pyramid.highpasses[level]).max() <= 1e-6
            # The inverse of the package's own pyramid.
            inverse = transform.inverse(
                torch.from_numpy(pyramid.lowpass)[None],
                [(torch.from_numpy(np.ascontiguousarray(h.real.transpose(2, 0, 1)))[None],
                  torch.from_numpy(np.ascontiguousarray(h.imag.transpose(2, 0, 1)))[None])
                 for h in pyramid.highpasses])[0]
            expected = reference.inverse(pyramid)
            assert inverse.shape == expected.shape
            assert np.abs(inverse.numpy() - expected).max() <= 1e-6


@pytest.mark.parametrize("verify", [0, 3])
@pytest.mark.parametrize("k", [2, 3])
def test_choose_max_matches_the_baseline(rng, package, filtering, verify, k):
    module = DtcwtChooseMax(verify)
    for shape in [(40, 40), (37, 53)]:
        planes = rng.random((k, 2, *shape)) * 255
        # A shared flat region: equal (zero) highpasses there, ties to the lowest k.
        planes[:, :, :12, :12] = 100.0
        fused = module(torch.from_numpy(planes)).numpy()
        expected = np.stack([dtcwt_choose_max(list(planes[:, c]), verify=verify) for c in range(2)])
        assert fused.shape == expected.shape
        assert np.abs(fused - expected).max() <= 1e-3


def test_verification_window_must_be_odd():
    with pytest.raises(ValueError):
        DtcwtChooseMax(4)


def numpy_start(pixels: torch.Tensor, verify: int) -> torch.Tensor:
    """The start as the numpy `dtcwt` package computes it, channel by channel."""
    planes = pixels.double().numpy()
    channels = [dtcwt_choose_max(list(planes[:, c]), verify=verify) for c in range(3)]
    return torch.from_numpy(np.stack(channels)[None]).to(pixels.dtype)


@pytest.mark.parametrize("verify", [0, 3])
def test_start_matches_the_numpy_package(rng, package, verify):
    colour = torch.from_numpy((rng.random((3, 3, 45, 60)) * 255).astype(np.float32))
    grey = colour[:, :1].expand(-1, 3, -1, -1).contiguous()
    for pixels in (colour[:2], grey[:2], colour):  # three inputs: the streamed start
        expected = numpy_start(pixels, verify)
        start = dtcwt_start(pixels, verify)
        assert start.shape == (1, 3, 45, 60) and start.dtype == pixels.dtype
        assert (start - expected).abs().max().item() <= 1e-3
        # Computed in float32: the same up to float32 rounding.
        assert (dtcwt_start(pixels, verify, dtype=None) - expected).abs().max().item() <= 1e-2
    assert torch.equal(dtcwt_start(grey, verify)[:, 0], dtcwt_start(grey, verify)[:, 2])


@pytest.mark.slow
@pytest.mark.parametrize("verify", [0, 3])
def test_ort_graph_matches_the_module(rng, graphs, verify):
    path = graphs[verify]
    assert path.name == f"dtcwt-start-v{verify}.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = DtcwtStartGraph(verify)
    for k, height, width in [(2, 64, 48), (3, 37, 53)]:
        pixels = (rng.random((k, 3, height, width)) * 255).astype(np.float32)
        got = session.run(["start"], {"pixels": pixels})[0]
        expected = module(torch.from_numpy(pixels)).numpy()
        assert got.shape == (1, 3, height, width)
        assert np.abs(got - expected).max() <= 1e-2
    modified = path.stat().st_mtime_ns
    assert export_dtcwt_graph(verify, path.parent) == path  # reused, not exported again
    assert path.stat().st_mtime_ns == modified


@pytest.mark.parametrize("verify", [0, 3])
def test_streamed_start_makes_the_stacked_choices(rng, verify):
    """Inputs transformed one at a time give the stacked module's result: exactly in float64
    (where a sum of three inputs' lowpasses rounds alike), to float32 rounding otherwise;
    repeated inputs check that ties stay with the lowest k."""
    for k, dtype, tolerance in [(3, torch.float64, 1e-9), (5, torch.float32, 1e-3)]:
        planes = torch.from_numpy(rng.random((k, 3, 45, 61)) * 255).to(dtype)
        planes[2] = planes[0]
        planes[1, :, :12] = planes[0, :, :12]
        with torch.no_grad():
            stacked = DtcwtChooseMax(verify)(planes)
        streamed = StreamedDtcwtChooseMax(verify)(k, lambda i: planes[i])
        assert streamed.shape == stacked.shape
        assert (streamed - stacked).abs().max().item() <= tolerance
