"""Grad-CAM, the multi-layer combination, CAM fusion, semantic retention and `semfuse-rt cam`."""
import sys

import numpy as np
import pytest
import torch
from conftest import dataset
from torch import nn

from semfuse_rt.engine.semantic.cam import (
    CAM_EPS, GradCAM, cam_weights, fuse_cam, fuse_with_weights, input_cams, semantic_retention,
)
from semfuse_rt.engine.semantic.cam_maps import combine_layer_maps, normalise_maps
from semfuse_rt.engine.semantic.classifier import load_classifier, network_pixels
from semfuse_rt.engine.io.colour import rgb_to_ycbcr, ycbcr_to_rgb
from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.io.images import load_image, save_image

# torchcam's maps and ours are the same arithmetic in a different order.
PARITY_RTOL = 1e-4


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


def photo(name: str) -> np.ndarray:
    return load_image(dataset("multifocus", f"{name}.jpg"))


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


def torchcam_layer_maps(model, layers, pixels, targets):
    """torchcam 0.5.0's Grad-CAM (unnormalised) for one class per image, one map per layer."""
    from torchcam.methods import GradCAM as TorchcamGradCAM

    with TorchcamGradCAM(model, list(layers)) as extractor:
        scores = model(pixels.clone().requires_grad_(True))
        return extractor(class_idx=targets.tolist(), scores=scores, normalized=False)


class GapNet(nn.Module):
    """conv -> ReLU (the CAM layer) -> global average pool -> linear: Grad-CAM in closed form."""

    def __init__(self, channels=4, classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


# --- Grad-CAM -------------------------------------------------------------------------------

def test_grad_cam_matches_its_closed_form():
    """d logit_c / d A_m(i, j) = w_cm / (h w), so alpha_m = w_cm / (h w) (Selvaraju et al.)."""
    torch.manual_seed(1)
    model = GapNet().eval()
    x = torch.randn(2, 3, 6, 5)
    targets = torch.tensor([[3], [0]])
    result = GradCAM(model, ["act"])(x, targets=targets)
    activation = model.act(model.conv(x)).detach()
    alpha = model.fc.weight[targets[:, 0]].detach() / (6 * 5)
    expected = torch.relu((alpha[:, :, None, None] * activation).sum(dim=1))
    assert torch.allclose(result.layer_maps[0][:, 0], expected, atol=1e-6)
    assert expected.max() > 0  # not a vacuous comparison
    assert torch.allclose(result.maps, normalise_maps(expected), atol=1e-6)


def test_parity_with_torchcam_on_efficientnet(classifier, rng):
    """Per-layer maps of the three CAM layers, on fresh random inputs and on a real photo."""
    random_pixels = torch.from_numpy(rng.uniform(0, 255, size=(2, 3, 224, 224)).astype(np.float32))
    real_pixels = network_pixels([photo("lytro-06-A")])
    for pixels in (random_pixels, real_pixels):
        ours = GradCAM(classifier.model, classifier.cam_layers)(pixels, classes=1)
        reference = torchcam_layer_maps(classifier.model, classifier.cam_layers, pixels, ours.classes[:, 0])
        assert len(reference) == 3
        for mine, theirs in zip(ours.layer_maps, reference):
            assert theirs.max() > 0
            assert relative_error(mine[:, 0], theirs) <= PARITY_RTOL


def test_cam_layers_are_the_three_lowest_resolutions(classifier):
    result = GradCAM(classifier.model, classifier.cam_layers)(torch.zeros(1, 3, 224, 224))
    assert [tuple(m.shape[-2:]) for m in result.layer_maps] == [(28, 28), (14, 14), (7, 7)]


def test_batch_members_do_not_influence_each_other(classifier, rng):
    pixels = torch.from_numpy(rng.uniform(0, 255, size=(2, 3, 224, 224)).astype(np.float32))
    cam = GradCAM(classifier.model, classifier.cam_layers)
    together = cam(pixels, classes=2, size=(50, 60))
    alone = cam(pixels[1:], classes=2, size=(50, 60))
    assert together.maps.shape == (2, 50, 60)
    assert torch.equal(together.classes[1], alone.classes[0])
    assert torch.allclose(together.maps[1], alone.maps[0], atol=1e-4)


def test_top_k_maps_are_probability_weighted_class_maps():
    torch.manual_seed(2)
    model = GapNet(channels=6, classes=7).eval()
    x = torch.randn(1, 3, 8, 8)
    cam = GradCAM(model, ["conv", "act"])
    top3 = cam(x, classes=3, size=(16, 16))
    probabilities = model(x).softmax(dim=1)[0]
    expected_classes = probabilities.topk(3).indices
    assert torch.equal(top3.classes[0], expected_classes)
    weights = probabilities[expected_classes] / probabilities[expected_classes].sum()
    assert torch.allclose(top3.class_weights[0], weights, atol=1e-6)
    singles = [cam(x, targets=torch.tensor([[int(c)]]), size=(16, 16)).maps[0] for c in expected_classes]
    expected = normalise_maps(sum(w * m for w, m in zip(weights, singles)))
    assert torch.allclose(top3.maps[0], expected, atol=1e-5)


def test_layers_are_normalised_averaged_and_renormalised():
    ramp = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # (N=1, K=1, 2, 2)
    flat = torch.zeros(1, 1, 2, 2)  # no evidence: contributes 0, not NaN
    combined = combine_layer_maps([ramp, flat], torch.ones(1, 1), (2, 2))
    assert torch.allclose(combined[0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    upsampled = combine_layer_maps([torch.rand(2, 1, 7, 7)], torch.ones(2, 1), (30, 20))
    assert upsampled.shape == (2, 30, 20)
    assert torch.allclose(upsampled.amin(dim=(1, 2)), torch.zeros(2))
    assert torch.allclose(upsampled.amax(dim=(1, 2)), torch.ones(2))


def test_hooks_are_removed_and_the_model_mode_restored():
    model = GapNet()
    model.train()
    cam = GradCAM(model, [model.act])
    cam(torch.randn(1, 3, 4, 4))
    assert model.training and model.conv.training
    assert all(len(m._forward_hooks) == 0 for m in model.modules())

    class Broken(GapNet):
        def forward(self, x):
            self.act(self.conv(x))
            raise RuntimeError("boom")

    broken = Broken()
    with pytest.raises(RuntimeError, match="boom"), GradCAM(broken, ["act"]) as failing:
        failing(torch.randn(1, 3, 4, 4))
    assert all(len(m._forward_hooks) == 0 for m in broken.modules())
    with pytest.raises(ValueError, match="no module named"):
        GradCAM(model, ["nope"])


# --- VGG19 as the CAM network -----------------------------------------------------------

def torchvision_layout_vgg19(hidden: int) -> nn.Module:
    """torchvision's vgg19 module layout (features.N / classifier.0,3,6), random weights;
    the head's hidden width is `hidden` instead of 4096 so the test stays small."""
    layers, channels = [], 3
    for width in [64, 64, "M", 128, 128, "M"] + ([256] * 4 + ["M"]) + ([512] * 4 + ["M"]) * 2:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            conv = nn.Conv2d(channels, width, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.uniform_(conv.bias, -0.05, 0.05)
            layers += [conv, nn.ReLU()]
            channels = width
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d(7)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 49, hidden), nn.ReLU(), nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Dropout(), nn.Linear(hidden, 1000),
    )
    model.forward = lambda x: model.classifier(model.avgpool(model.features(x)).flatten(1))
    return model.eval()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(3)
    reference = torchvision_layout_vgg19(hidden=32)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_vgg19_classifier_matches_the_torchvision_layout(vgg_file):
    reference, path = vgg_file
    vgg = load_classifier(path)
    assert vgg.name == "vgg19"
    pixels = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        expected = reference(vgg.model.normalisation.apply(pixels))
        assert torch.allclose(vgg.model(pixels), expected, rtol=1e-4, atol=1e-5)
    result = GradCAM(vgg.model, vgg.cam_layers)(pixels, classes=1)
    assert [tuple(m.shape[-2:]) for m in result.layer_maps] == [(16, 16), (8, 8), (4, 4)]
    reference_maps = torchcam_layer_maps(vgg.model, vgg.cam_layers, pixels, result.classes[:, 0])
    for mine, theirs in zip(result.layer_maps, reference_maps):
        assert theirs.max() > 0
        assert relative_error(mine[:, 0], theirs) <= PARITY_RTOL


def test_vgg19_without_its_head_cannot_be_the_cam_network(vgg_file, tmp_path):
    reference, _ = vgg_file
    convs_only = {k: v for k, v in reference.state_dict().items() if k.startswith("features.")}
    torch.save(convs_only, tmp_path / "vgg19_convs.pth")
    with pytest.raises(SemfuseError, match="without the classifier head"):
        load_classifier(tmp_path / "vgg19_convs.pth")
    wrong = dict(reference.state_dict(), **{"classifier.6.weight": torch.zeros(10, 32),
                                            "classifier.6.bias": torch.zeros(10)})
    torch.save(wrong, tmp_path / "vgg19_10.pth")
    with pytest.raises(SemfuseError, match="10 outputs"):
        load_classifier(tmp_path / "vgg19_10.pth")


# --- CAM weights and fusion --------------------------------------------------------------

def test_cam_weights_sum_to_one_and_fall_back_to_equal():
    maps = torch.tensor([[[1.0, 0.0, 0.2]], [[0.0, 0.0, 0.6]], [[0.0, CAM_EPS / 10, 0.2]]])
    weights = cam_weights(maps)
    assert torch.allclose(weights.sum(dim=0), torch.ones(1, 3))
    assert torch.allclose(weights[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(weights[:, 0, 1], torch.full((3,), 1 / 3))  # sum below eps
    assert torch.allclose(weights[:, 0, 2], torch.tensor([0.2, 0.6, 0.2]))
    as_numpy = cam_weights(maps.numpy())
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    assert np.allclose(as_numpy, weights.numpy())


def _halves(height, width):
    """Weights that take input 0 on the left half and input 1 on the right half."""
    left = np.zeros((height, width))
    left[:, : width // 2] = 1.0
    return np.stack([left, 1.0 - left])


@pytest.mark.parametrize("shape,dtype", [((6, 8), np.uint8), ((6, 8, 3), np.uint8), ((6, 8, 3), np.uint16)])
def test_fusion_picks_pixels_where_one_input_has_all_the_weight(rng, shape, dtype):
    top = np.iinfo(dtype).max
    a, b = (rng.integers(0, top + 1, size=shape, dtype=dtype) for _ in range(2))
    fused = fuse_with_weights([a, b], _halves(6, 8))
    assert fused.dtype == dtype and fused.shape == shape
    assert np.array_equal(fused[:, :4], a[:, :4]) and np.array_equal(fused[:, 4:], b[:, 4:])
    equal = fuse_with_weights([a, b], np.full((2, 6, 8), 0.5))
    assert np.abs(equal.astype(np.int64) - (a.astype(np.int64) + b) / 2).max() <= 0.5


def test_mixed_grey_and_colour_fuse_luma_and_keep_the_colour_chroma(rng):
    grey = rng.integers(0, 256, size=(6, 8), dtype=np.uint8)
    colour = rng.integers(60, 200, size=(6, 8, 3), dtype=np.uint8)
    fused = fuse_with_weights([grey, colour], np.stack([np.ones((6, 8)), np.zeros((6, 8))]))
    assert fused.shape == (6, 8, 3)
    ycbcr = rgb_to_ycbcr(fused.astype(np.float64))
    colour_chroma = rgb_to_ycbcr(colour.astype(np.float64))[:, :, 1:]
    # Where grey's luma with the colour's chroma is in the RGB gamut, rounding to 8 bits is
    # the only error (at most 0.5 per channel).
    unclipped = ycbcr_to_rgb(np.concatenate([grey[:, :, None].astype(np.float64), colour_chroma], axis=2))
    inside = ((unclipped >= 0.5) & (unclipped <= 254.5)).all(axis=2)
    assert inside.mean() > 0.5
    assert np.abs(ycbcr[:, :, 0] - grey)[inside].max() <= 1.0
    assert np.abs(ycbcr[:, :, 1:] - colour_chroma)[inside].max() <= 1.0


def test_fusion_refuses_weights_of_the_wrong_shape(rng):
    a = rng.integers(0, 256, size=(6, 8), dtype=np.uint8)
    with pytest.raises(SemfuseError, match="do not fit"):
        fuse_with_weights([a, a], np.ones((2, 8, 6)))


def test_cam_fusion_of_a_real_multifocus_pair(classifier):
    near, far = photo("lytro-05-A"), photo("lytro-05-B")
    result = fuse_cam([near, far], classifier)
    assert result.image.shape == near.shape and result.image.dtype == np.uint8
    assert result.cams.maps.shape == (2, 520, 520)
    assert torch.allclose(result.weights.sum(dim=0), torch.ones(520, 520, dtype=result.weights.dtype))
    assert result.weights.std() > 0.05  # the CAMs do steer the fusion
    low = np.minimum(near, far).astype(int) - 1
    high = np.maximum(near, far).astype(int) + 1
    assert ((result.image >= low) & (result.image <= high)).all()  # a convex combination
    retention = semantic_retention([near, far], result.image, classifier)
    assert [(r.input_index, r.class_name, r.fused_rank) for r in retention] == [
        (0, "chainlink_fence", 1), (1, "chainlink_fence", 1)]
    assert all(r.fused_probability > 0.3 for r in retention)


def test_semantic_retention_ranks_a_lost_class(classifier):
    fence, bottle = photo("lytro-05-A"), photo("lytro-09-A")
    (entry,) = semantic_retention([fence], bottle, classifier)
    assert entry.class_name == "chainlink_fence" and entry.input_probability > 0.5
    assert entry.fused_rank > 5 and entry.fused_probability < 0.05


def test_input_cams_need_one_size(classifier):
    with pytest.raises(SemfuseError, match="one size"):
        input_cams(classifier, [np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8)])


# --- `semfuse-rt cam` ------------------------------------------------------------------

def test_overlay_blends_the_jet_colours():
    from semfuse_rt.engine.semantic.heatmaps import overlay_heatmap

    image = np.full((4, 5, 3), 100, np.uint8)
    cam_map = np.zeros((4, 5))
    assert np.array_equal(overlay_heatmap(image, cam_map, alpha=0.0), image)
    assert (overlay_heatmap(image, cam_map, alpha=1.0) == [0, 0, 128]).all()  # jet(0): dark blue
    hot = overlay_heatmap(np.full((4, 5), 100 * 257, np.uint16), np.ones((4, 5)), alpha=1.0)
    assert hot.dtype == np.uint8 and (hot == [128, 0, 0]).all()  # jet(1): dark red


def test_cam_command_writes_the_overlay_and_prints_the_top5(tmp_path):
    from typer.testing import CliRunner

    from semfuse_rt.engine.cli import app

    source = dataset("multifocus", "lytro-06-A.jpg")
    output = tmp_path / "heat.png"
    result = CliRunner().invoke(app, ["cam", str(source), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "padlock" in result.output and "probability" in result.output
    overlay = load_image(output)
    assert overlay.shape == (520, 520, 3) and overlay.dtype == np.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.png"]  # no temp file left

    grey16 = tmp_path / "grey16.png"
    save_image(grey16, (photo("lytro-05-A").mean(axis=2) * 257).astype(np.uint16))
    result = CliRunner().invoke(app, ["cam", str(grey16), "-o", str(tmp_path / "g.png"), "--classes", "2"])
    assert result.exit_code == 0, result.output
    assert load_image(tmp_path / "g.png").shape == (520, 520, 3)


@pytest.mark.parametrize("problem", ["missing", "corrupt", "no-folder"])
def test_cam_command_reports_bad_input_in_one_line(tmp_path, monkeypatch, capsys, problem):
    from semfuse_rt.engine.cli import main

    image, output = str(dataset("multifocus", "lytro-06-A.jpg")), str(tmp_path / "out.png")
    if problem == "missing":
        image = str(tmp_path / "absent.png")
    elif problem == "corrupt":
        (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
        image = str(tmp_path / "corrupt.png")
    else:
        output = str(tmp_path / "absent" / "out.png")
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", "cam", image, "-o", output])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("semfuse-rt: error:") and "\n" not in error
    assert "Traceback" not in error
