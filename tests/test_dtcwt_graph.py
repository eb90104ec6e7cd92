"""The project's DT-CWT as torch ops: the filters, the transform and the choose-max fusion
against the `dtcwt` package's outputs (recorded in data/dtcwt_oracle.npz by
data/make_dtcwt_oracle.py: the package needs numpy < 2), the start image against the
`dtcwt` baseline, the streamed fusion against the stacked one, and the ONNX Runtime graph
against the torch module."""
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from semfuse_rt.engine.evaluation.baselines import dtcwt_choose_max
from semfuse_rt.export.graphs import dtcwt_graph
from semfuse_rt.export.graphs.dtcwt_graph import BIORTS, QSHIFTS, DtcwtChooseMax, DtcwtStartGraph, DtcwtTransform, \
    StreamedDtcwtChooseMax, dtcwt_filters, dtcwt_start, export_dtcwt_graph

ORACLE = Path(__file__).resolve().parent / "data" / "dtcwt_oracle.npz"


@pytest.fixture(params=["slices", "convolutions"])
def filtering(request, monkeypatch):
    """Both ways of filtering: shifted slices (eager CPU) and convolutions (GPU, ONNX)."""
    if request.param == "convolutions":
        monkeypatch.setattr(dtcwt_graph, "_use_taps", lambda x: False)
    return request.param


@pytest.fixture(scope="module")
def oracle():
    """The `dtcwt` package's outputs by key, e.g. "transform/21x27/lowpass"."""
    with np.load(ORACLE) as data:
        return {key: data[key] for key in data.files}


def cases(oracle, group: str) -> list[str]:
    names = sorted({key.split("/")[1] for key in oracle if key.startswith(group + "/")})
    assert names, f"no {group} cases in {ORACLE.name}"
    return names


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("graphs")
    return {verify: export_dtcwt_graph(verify, directory) for verify in (0, 3)}


def test_filters_are_the_packages_to_the_last_bit(oracle):
    for biort in BIORTS:
        for qshift in QSHIFTS:
            first, rest = dtcwt_filters(biort, qshift)
            for name, filters in ((biort, first), (qshift, rest)):
                for i, h in enumerate(filters):
                    expected = oracle[f"filters/{name}/{i}"]
                    assert h.dtype == expected.dtype and np.array_equal(h, expected), (name, i)
    with pytest.raises(ValueError, match="near_sym_b_bp.*one of antonini"):
        dtcwt_filters("near_sym_b_bp", "qshift_a")
    with pytest.raises(ValueError, match="qshift_32"):
        DtcwtTransform(qshift="qshift_32")


def test_forward_and_inverse_match_the_package(oracle, filtering):
    """Sizes whose levels need no extension, need it, are odd, and are too small for 4
    levels; the package's pyramid of each plane and its inverse of that pyramid."""
    transform = DtcwtTransform()
    for size in cases(oracle, "transform"):
        recorded = {key.split("/")[-1]: value for key, value in oracle.items() if key.startswith(f"transform/{size}/")}
        lowpass, highpasses = transform(torch.from_numpy(recorded["input"])[None])
        assert lowpass[0].shape == recorded["lowpass"].shape
        assert np.abs(lowpass[0].numpy() - recorded["lowpass"]).max() <= 1e-6
        assert len(highpasses) == 4
        package_pyramid = []
        for level, (real, imag) in enumerate(highpasses):
            expected_real, expected_imag = recorded[f"real{level}"], recorded[f"imag{level}"]
            assert real[0].shape == expected_real.shape, (size, level)
            assert np.abs(real[0].numpy() - expected_real).max() <= 1e-6
            assert np.abs(imag[0].numpy() - expected_imag).max() <= 1e-6
            package_pyramid.append((torch.from_numpy(expected_real)[None], torch.from_numpy(expected_imag)[None]))
        inverse = transform.inverse(torch.from_numpy(recorded["lowpass"])[None], package_pyramid)[0]
        assert inverse.shape == recorded["inverse"].shape
        assert np.abs(inverse.numpy() - recorded["inverse"]).max() <= 1e-6


def test_choose_max_matches_the_package(oracle, filtering):
    """The stacked and the streamed fusion against the package-based choose-max, with and
    without verification; a shared flat corner checks that ties go to the lowest k."""
    for name in cases(oracle, "choose_max"):
        planes = torch.from_numpy(oracle[f"choose_max/{name}/input"].astype(np.float64))[:, None]
        verify = int(oracle[f"choose_max/{name}/verify"])
        expected = oracle[f"choose_max/{name}/fused"]
        with torch.no_grad():
            stacked = DtcwtChooseMax(verify)(planes)[0].numpy()
        streamed = StreamedDtcwtChooseMax(verify)(len(planes), lambda k: planes[k])[0].numpy()
        for fused in (stacked, streamed):
            assert fused.shape == expected.shape
            assert np.abs(fused - expected).max() <= 1e-9, name


def test_verification_window_must_be_odd():
    with pytest.raises(ValueError):
        DtcwtChooseMax(4)


def baseline_start(pixels: torch.Tensor, verify: int) -> torch.Tensor:
    """The start as the `dtcwt` baseline computes it: channel by channel, in float64."""
    planes = pixels.double().numpy()
    channels = [dtcwt_choose_max(list(planes[:, c]), verify=verify) for c in range(3)]
    return torch.from_numpy(np.stack(channels)[None]).to(pixels.dtype)


@pytest.mark.parametrize("verify", [0, 3])
def test_start_matches_the_baseline(rng, verify):
    """The start's shortcuts (a repeated channel copied, float32) against the baseline's plane
    by plane fusion."""
    colour = torch.from_numpy((rng.random((3, 3, 45, 60)) * 255).astype(np.float32))
    grey = colour[:, :1].expand(-1, 3, -1, -1).contiguous()
    for pixels in (colour[:2], grey[:2], colour):  # three inputs: the streamed start
        expected = baseline_start(pixels, verify)
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
