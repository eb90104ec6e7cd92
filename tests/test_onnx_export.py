"""Export stage and ONNX Runtime backend: graphs, manifests, parity with Torch."""
import json

import numpy as np
import onnx
import pytest
import torch

from conftest import EXAMPLES
from semfuse_rt.engine.api import fuse
from semfuse_rt.engine.backends import create_runner, resolve_backend
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.backends.ort.row_bands import band_ranges
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.graphs.onnx_export import export_graphs


@pytest.fixture(scope="module")
def engine_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


def test_graphs_are_valid_dynamic_and_opset_17(vgg_weights, engine_dirs):
    graphs = export_graphs(vgg_weights, "relu1_2", engine_dirs / "relu1_2")
    assert graphs.built
    for path in (graphs.features, graphs.gradient):
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        image = model.graph.input[0]
        dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]
    gradient_ops = {n.op_type for n in onnx.load(graphs.gradient).graph.node}
    assert "Conv" in gradient_ops and "Greater" in gradient_ops
    manifest = json.loads((graphs.directory / "manifest.json").read_text())
    for key in ("weights_sha256", "layer", "normalisation", "opset", "io", "shape_policy", "tools", "created", "files"):
        assert key in manifest
    assert manifest["weights_sha256"] == vgg_weights.sha256 and manifest["layer"] == "relu1_2"


def test_rebuild_is_skipped_unless_something_changed(vgg_weights, engine_dirs):
    directory = engine_dirs / "relu1_1"
    first = export_graphs(vgg_weights, "relu1_1", directory)
    mtime = first.gradient.stat().st_mtime_ns
    again = export_graphs(vgg_weights, "relu1_1", directory)
    assert first.built and not again.built and again.gradient.stat().st_mtime_ns == mtime
    first.gradient.write_bytes(first.gradient.read_bytes()[:-10])  # a damaged artefact
    assert export_graphs(vgg_weights, "relu1_1", directory).built
    other_layer = export_graphs(vgg_weights, "relu1_2", directory)
    assert other_layer.built and other_layer.manifest["layer"] == "relu1_2"


@pytest.mark.parametrize("layer", ["relu1_1", "relu1_2", "pool1", "relu2_1"])
def test_ort_gradient_matches_autograd_at_odd_sizes(vgg_weights, engine_dirs, layer):
    generator = torch.Generator().manual_seed(11)
    pixels = torch.rand(1, 3, 37, 53, generator=generator) * 255
    with create_runner("torch", vgg_weights, layer) as reference, \
            create_runner("ort", vgg_weights, layer, engine_dir=engine_dirs / f"odd-{layer}") as ort_runner:
        target = reference.features(torch.rand(1, 3, 37, 53, generator=generator) * 255)
        ort_features = ort_runner.features(pixels)
        want_features = reference.features(pixels)
        assert ((ort_features - want_features).norm() / want_features.norm()).item() <= 1e-5
        loss, grad = ort_runner.loss_and_grad(pixels, target)
        want_loss, want_grad = reference.loss_and_grad(pixels, target)
    assert abs(loss.item() - want_loss.item()) <= 1e-5 * want_loss.item()
    assert ((grad - want_grad).norm() / want_grad.norm()).item() <= 1e-5


def test_row_band_graph_is_exported_for_one_convolution_only(vgg_weights, engine_dirs):
    banded = export_graphs(vgg_weights, "relu1_1", engine_dirs / "relu1_1")
    assert banded.row_bands.is_file() and banded.manifest["io"]["gradient_rows.onnx"]["outputs"] == ["loss", "grad_rows"]
    onnx.checker.check_model(onnx.load(banded.row_bands), full_check=True)
    # The padding pixel is what the graph subtracts first, so such rows shift to exact zeros.
    assert banded.row_band_padding == pytest.approx([123.68, 116.779, 103.939], abs=1e-3)
    assert export_graphs(vgg_weights, "relu1_2", engine_dirs / "relu1_2").row_bands is None


def test_band_ranges_tile_the_rows(random_vgg_weights):
    assert band_ranges(37, 16) == [(0, 16), (16, 32), (32, 37)]
    assert band_ranges(5, 64) == [(0, 5)] and band_ranges(3, 1) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError):
        band_ranges(5, 0)
    with pytest.raises(SemfuseError, match="at least one row"):
        create_runner("ort", random_vgg_weights, "relu1_1", band_rows=0)


@pytest.mark.parametrize("layer", ["relu1_1", "conv1_1"])
@pytest.mark.parametrize("batch, height, width, rows, threads", [
    (1, 37, 53, 16, None), (2, 37, 53, 5, 3), (2, 6, 9, 1, 2), (1, 1, 7, 16, 2), (1, 20, 3, 64, 1)])
def test_row_bands_match_autograd_and_the_whole_image_graph(vgg_weights, engine_dirs, layer, batch, height, width,
                                                            rows, threads):
    generator = torch.Generator().manual_seed(height * width + rows)
    pixels = torch.rand(batch, 3, height, width, generator=generator) * 255
    directory = engine_dirs / f"bands-{layer}"
    with create_runner("torch", vgg_weights, layer) as reference, \
            create_runner("ort", vgg_weights, layer, engine_dir=directory, band_rows=rows, threads=threads) as banded, \
            create_runner("ort", vgg_weights, layer, engine_dir=directory, band_rows=None) as whole:
        assert banded.sessions.band_sessions and not whole.sessions.band_sessions
        target = reference.features(torch.rand(batch, 3, height, width, generator=generator) * 255)
        got = banded.loss_and_grad(pixels, target)
        for want in (reference.loss_and_grad(pixels, target), whole.loss_and_grad(pixels, target)):
            assert ((got[0] - want[0]).abs().max() / want[0].abs().max()).item() <= 1e-5
            assert ((got[1] - want[1]).norm() / want[1].norm()).item() <= 1e-5


def test_ort_loop_runs_torch_on_one_thread_and_restores_it(vgg_weights):
    before = torch.get_num_threads()
    with create_runner("ort", vgg_weights, "relu1_1") as runner:
        with runner.loop_context():
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("preset", ["fast", "refined", "paper"])
def test_ort_and_torch_fusions_agree_within_one_grey_level(vgg_weights, preset):
    # A crop of a real pair: on uniform noise, float32 (the ORT graphs) and float64 (torch
    # on the CPU) DT-CWT magnitudes tie so often that the start's choices differ in places.
    a, b = (load_image(EXAMPLES / f"lytro-01-{side}.jpg")[200:264, 150:230] for side in "AB")
    options = dict(method="max", preset=preset, weights=vgg_weights)
    via_torch = fuse([a, b], backend="torch", **options)
    via_ort = fuse([a, b], backend="ort", **options)
    assert np.abs(via_torch.astype(int) - via_ort).max() <= 1


@pytest.mark.parametrize("how", ["dtcwt", "dtcwt-verified", "mean", "max"])
def test_ort_start_graph_matches_the_numpy_reference(random_vgg_weights, how):
    from semfuse_rt.engine.evaluation.baselines import dtcwt_choose_max
    from semfuse_rt.engine.io.sources import prepare

    sources = prepare([load_image(EXAMPLES / f"lytro-01-{side}.jpg") for side in "AB"])
    pixels = torch.from_numpy(sources.pixels)
    with create_runner("ort", random_vgg_weights, "relu1_1") as runner:
        start = runner.start(pixels, how)[0].numpy()
    if how.startswith("dtcwt"):
        verify = 3 if how == "dtcwt-verified" else 0
        planes = sources.pixels.astype(np.float64)
        want = np.stack([dtcwt_choose_max(list(planes[:, c]), verify=verify) for c in range(3)])
    else:
        want = getattr(np, how)(sources.pixels, axis=0)
    assert np.abs(start - want).max() <= 1.0


def test_auto_picks_an_available_backend_and_unknown_names_fail():
    assert resolve_backend("auto") in ("trt", "ort")
    assert resolve_backend("torch") == "torch"
