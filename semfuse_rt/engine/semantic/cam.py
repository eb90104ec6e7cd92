"""Class activation maps and the `cam` fusion method (docs/method.md section 2).

Grad-CAM: R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra,
"Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017. For class c at layer l: alpha_m = spatial mean of d(logit_c)/d(A^l_m),
M^l = ReLU(sum_m alpha_m A^l_m).

Combination (docs/method.md): each layer's map is bilinearly upsampled to H x W and normalised to
[0, 1]; the layers' maps are averaged and the average normalised to [0, 1] again. With
`classes=K > 1` this is done per class for the K most probable classes, and the per-class
maps are averaged with weights p_c / sum(p) (softmax probabilities), then normalised again,
so every class map has the same range before the probabilities weigh it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from semfuse_rt.engine.semantic.cam_maps import CAMResult, combine_layer_maps, map_size
from semfuse_rt.engine.semantic.classifier import Classifier, network_pixels, predict
from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.io.sources import check_images, finish, prepare

# Where the CAMs of all inputs sum to less than this (maps are in [0, 1], so: no input shows
# any class evidence there), every input gets weight 1/K instead of a 0/0 division.
CAM_EPS = 1e-6


class GradCAM:
    """Grad-CAM on `target_layers` (module names in `model`, or the modules themselves).

    Calling it runs the model on a batch, so predictions and maps come from one forward
    pass. Hooks live only inside a call; the object keeps no tensors between calls.

        with GradCAM(model, ["layer3", "layer4"]) as cam:
            result = cam(batch, classes=1)          # result.maps: (N, H, W)
    """

    def __init__(self, model: nn.Module, target_layers: Sequence[str | nn.Module]):
        if len(target_layers) == 0:
            raise ValueError("GradCAM needs at least one target layer")
        named = dict(model.named_modules())
        self.model: nn.Module | None = model
        self.layers: list[nn.Module] = []
        for layer in target_layers:
            if isinstance(layer, str):
                if layer not in named:
                    raise ValueError(f"model has no module named {layer!r}")
                layer = named[layer]
            elif not any(layer is m for m in named.values()):
                raise ValueError("target layer is not a module of the model")
            self.layers.append(layer)

    def __enter__(self) -> "GradCAM":
        return self

    def __exit__(self, *exc_info) -> None:
        self.model = None  # a used-up extractor cannot keep the network alive
        self.layers = []

    def _forward(self, model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        activations: list[torch.Tensor | None] = [None] * len(self.layers)

        def keeper(index):
            def hook(_module, _inputs, output):
                activations[index] = output
            return hook

        handles = [layer.register_forward_hook(keeper(i)) for i, layer in enumerate(self.layers)]
        training = [(m, m.training) for m in model.modules()]
        try:
            # Eval mode: batch norm must use its running statistics, or images in a batch
            # would change each other's gradients.
            model.eval()
            with torch.enable_grad():
                # The input needs a gradient so the graph is recorded even for a frozen model.
                logits = model(pixels.detach().requires_grad_(True))
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in training:
                module.training = mode
        maps = []
        for index, activation in enumerate(activations):
            if not isinstance(activation, torch.Tensor) or activation.ndim != 4:
                raise ValueError(f"target layer {index} did not produce an (N, C, h, w) map")
            maps.append(activation)
        return logits, maps

    def __call__(self, pixels: torch.Tensor, classes: int = 1, size: tuple[int, int] | None = None,
                 targets: torch.Tensor | None = None) -> CAMResult:
        """Maps for the `classes` most probable classes of each image (or for the (N, K)
        class indices `targets`), combined and upsampled to `size` (default: the input's)."""
        if self.model is None:
            raise RuntimeError("this GradCAM was closed")
        logits, activations = self._forward(self.model, pixels)
        probabilities = logits.detach().softmax(dim=1)
        if targets is None:
            if not 1 <= classes <= logits.shape[1]:
                raise ValueError(f"classes must be 1..{logits.shape[1]}, got {classes}")
            targets = probabilities.topk(classes, dim=1).indices
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(logits.shape[0], -1)
        chosen = probabilities.gather(1, targets)
        class_weights = chosen / chosen.sum(dim=1, keepdim=True).clamp_min(torch.finfo(chosen.dtype).tiny)

        per_class: list[list[torch.Tensor]] = [[] for _ in activations]
        for k in range(targets.shape[1]):
            # Images are independent in eval mode, so one backward of the summed scores
            # gives every image the gradient of its own class score.
            score = logits.gather(1, targets[:, k:k + 1]).sum()
            gradients = torch.autograd.grad(score, activations, retain_graph=k + 1 < targets.shape[1])
            for index, (activation, gradient) in enumerate(zip(activations, gradients)):
                alpha = gradient.mean(dim=(2, 3), keepdim=True)
                per_class[index].append(torch.relu((alpha * activation.detach()).sum(dim=1)))
        layer_maps = [torch.stack(maps, dim=1) for maps in per_class]

        maps = combine_layer_maps(layer_maps, class_weights, map_size(pixels, size))
        return CAMResult(maps, layer_maps, logits.detach(), targets, class_weights)


CAM_BACKENDS = ("torch", "ort")


def cam_extractor(classifier: Classifier, backend: str = "torch"):
    """What computes the maps: GradCAM on the Torch model (autograd), or the exported CAM
    graph with its backward written out, run by ONNX Runtime. Both are context managers
    called as (pixels, classes=, size=, targets=) -> CAMResult."""
    if backend == "torch":
        return GradCAM(classifier.model, classifier.cam_layers)
    if backend == "ort":
        from semfuse_rt.engine.semantic.cam_runner import OrtCamRunner

        return OrtCamRunner(classifier)
    raise SemfuseError(f"unknown CAM backend {backend!r}; use one of {', '.join(CAM_BACKENDS)}")


def input_cams(classifier: Classifier, images: Sequence[np.ndarray], classes: int = 1,
               backend: str = "torch", extractor=None) -> CAMResult:
    """CAMs M_k of images of one size (N, H, W), each classified at the classifier's size.
    `extractor`: an open cam_extractor to reuse (else one for `backend` is opened and closed)."""
    sizes = {image.shape[:2] for image in images if isinstance(image, np.ndarray)}
    pixels = network_pixels(images, classifier.input_size)  # checks modes first
    if len(sizes) != 1:
        raise SemfuseError("CAM inputs must share one size; got " + ", ".join(f"{w}x{h}" for h, w in sorted(sizes)))
    if extractor is not None:
        return extractor(pixels, classes=classes, size=sizes.pop())
    with cam_extractor(classifier, backend) as cam:
        return cam(pixels, classes=classes, size=sizes.pop())


def cam_weights(maps, eps: float = CAM_EPS):
    """Fusion weights W_k = M_k / sum_j M_j over axis 0 (the K inputs), 1/K where the sum
    is below `eps`. Takes and returns a torch tensor or a numpy array of shape (K, ...)."""
    if isinstance(maps, np.ndarray):
        return cam_weights(torch.from_numpy(maps), eps).numpy()
    total = maps.sum(dim=0, keepdim=True)
    equal = torch.full_like(maps, 1.0 / maps.shape[0])
    return torch.where(total >= eps, maps / total.clamp_min(eps), equal)


def fuse_with_weights(images: Sequence[np.ndarray], weights) -> np.ndarray:
    """sum_k W_k * I_k under docs/method.md's input rules (grey / colour / mixed via luma)."""
    sources = prepare(images)
    weights = torch.as_tensor(np.asarray(weights) if not isinstance(weights, torch.Tensor) else weights)
    if tuple(weights.shape) != (sources.count, *sources.size):
        raise SemfuseError(f"weights of shape {tuple(weights.shape)} do not fit {sources.count} "
                           f"images of {sources.size[1]}x{sources.size[0]}")
    pixels = torch.from_numpy(sources.pixels).double()
    fused = (weights.double()[:, None] * pixels).sum(dim=0)
    return finish(fused.numpy(), sources)


@dataclass
class CAMFusion:
    image: np.ndarray
    cams: CAMResult
    weights: torch.Tensor  # (K, H, W)


def fuse_cam(images: Sequence[np.ndarray], classifier: Classifier, classes: int = 1,
             eps: float = CAM_EPS, backend: str = "torch", extractor=None) -> CAMFusion:
    """Method `cam`: direct CAM fusion. Each input is classified as it is (colour stays colour)."""
    check_images(images)
    cams = input_cams(classifier, images, classes, backend, extractor)
    weights = cam_weights(cams.maps, eps)
    return CAMFusion(fuse_with_weights(images, weights), cams, weights)


@dataclass(frozen=True)
class Retention:
    input_index: int  # 0-based
    class_index: int  # the input's top-1 class
    class_name: str
    input_probability: float
    fused_rank: int  # 1 = also the fused image's top class
    fused_probability: float


def semantic_retention(inputs: Sequence[np.ndarray], fused: np.ndarray,
                       classifier: Classifier) -> list[Retention]:
    """For each input's top-1 class: where it ranks, and how probable it is, in the fused image."""
    # One image at a time: inputs kept on disk (engine/io/spilled_images.py) are read back one
    # by one, never all at once.
    probabilities = torch.cat([predict(classifier, [np.asarray(image)]) for image in [*inputs, fused]])
    fused_row = probabilities[-1]
    report = []
    for index, row in enumerate(probabilities[:-1]):
        top = int(row.argmax())
        in_fused = fused_row[top]
        rank = 1 + int((fused_row > in_fused).sum())
        report.append(Retention(index, top, classifier.class_names[top], float(row[top]), rank, float(in_fused)))
    return report
