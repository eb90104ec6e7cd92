"""TensorRT optimisation profiles: the `--shapes MIN,OPT,MAX` spec and what it means for
each input of an exported graph.

A spec is three points `NxHxW` (images x height x width), e.g. the default
`1x256x256,2x512x512,4x1024x1024`: engines accept 1..4 images of any size from 256 to 1024
pixels a side (height and width independently), and TensorRT picks its kernels for the
middle point. N is the number of images one features call takes (the K inputs); the
gradient graph optimises one fused image per call, so its batch is tuned for 1 while still
accepting up to N.

Graph inputs are mapped by the names of their dynamic dimensions, which the exporter sets:
`batch`, `height`, `width` take the spec's N, H, W; `feature_height`, `feature_width` take
the layer's feature-map size at that H, W; fixed dimensions stay as they are. (Where the
layer has no pooling the exporter may name the image's height `feature_height`: equal
sizes, so the same value.) A graph with other dynamic dimensions passes explicit profiles.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from semfuse_rt.errors import SemfuseError

SHAPES_FORMAT = "MIN,OPT,MAX with each NxHxW (images x height x width), e.g. 1x256x256,2x512x512,4x1024x1024"
_POINT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*$")
# A profile wider than this is a typo, not a plan: TensorRT would size memory for it.
MAX_SIDE = 16384
MAX_BATCH = 64

Dims = tuple[int, ...]
Profile = tuple[Dims, Dims, Dims]  # (min, opt, max) of one input


@dataclass(frozen=True)
class ShapePoint:
    batch: int
    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.batch}x{self.height}x{self.width}"

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.batch, self.height, self.width)

    def within(self, low: ShapePoint, high: ShapePoint) -> bool:
        return all(a <= b <= c for a, b, c in zip(low.as_tuple(), self.as_tuple(), high.as_tuple()))


@dataclass(frozen=True)
class ShapeSpec:
    min: ShapePoint
    opt: ShapePoint
    max: ShapePoint

    def __post_init__(self):
        for point in (self.min, self.opt, self.max):
            if min(point.as_tuple()) < 1:
                raise SemfuseError(f"shape {point} has a zero dimension; use {SHAPES_FORMAT}")
            if point.batch > MAX_BATCH or max(point.height, point.width) > MAX_SIDE:
                raise SemfuseError(f"shape {point} is larger than {MAX_BATCH}x{MAX_SIDE}x{MAX_SIDE}")
        if not self.opt.within(self.min, self.max):
            raise SemfuseError(
                f"shapes must satisfy MIN <= OPT <= MAX in every dimension, got {self}")

    def __str__(self) -> str:
        return f"{self.min},{self.opt},{self.max}"

    def covers(self, point: ShapePoint) -> bool:
        return point.within(self.min, self.max)

    def widened(self, point: ShapePoint) -> ShapeSpec:
        """The smallest spec with the same OPT that covers this one and `point`."""
        low = ShapePoint(*(min(a, b) for a, b in zip(self.min.as_tuple(), point.as_tuple())))
        high = ShapePoint(*(max(a, b) for a, b in zip(self.max.as_tuple(), point.as_tuple())))
        return ShapeSpec(low, self.opt, high)

    def single_image(self) -> ShapeSpec:
        """The gradient graph's spec: tuned for one image, still accepting up to MAX's N."""
        return ShapeSpec(ShapePoint(1, self.min.height, self.min.width),
                         ShapePoint(1, self.opt.height, self.opt.width), self.max)


def parse_point(text: str) -> ShapePoint:
    match = _POINT.match(text)
    if not match:
        raise SemfuseError(f"bad shape {text.strip()!r}; use {SHAPES_FORMAT}")
    return ShapePoint(*(int(g) for g in match.groups()))


def parse_shapes(text: str) -> ShapeSpec:
    parts = text.split(",")
    if len(parts) != 3:
        raise SemfuseError(f"--shapes needs three shapes, got {len(parts)} in {text!r}; use {SHAPES_FORMAT}")
    return ShapeSpec(*(parse_point(part) for part in parts))


DEFAULT_SHAPES = parse_shapes("1x256x256,2x512x512,4x1024x1024")


def pooled_size(layer: str) -> Callable[[int], int]:
    """Feature-map side for an input side at VGG19 `layer`: each 2x2 max-pool floors."""
    from semfuse_rt.export.networks.vgg19 import layers_up_to

    pools = sum(1 for _, kind, _ in layers_up_to(layer) if kind == "pool")

    def size(side: int) -> int:
        for _ in range(pools):
            side //= 2
        return side

    return size


def resolve_dim(dim: int | str, point: ShapePoint, feature_size: Callable[[int], int] | None) -> int:
    """One dimension of an input at one spec point (see the module docstring)."""
    if isinstance(dim, int) and dim > 0:
        return dim
    if dim == "batch":
        return point.batch
    if dim == "height":
        return point.height
    if dim == "width":
        return point.width
    if dim in ("feature_height", "feature_width") and feature_size is not None:
        side = feature_size(point.height if dim == "feature_height" else point.width)
        if side < 1:
            raise SemfuseError(f"shape {point} is too small for this layer (its feature map would be empty)")
        return side
    raise SemfuseError(f"cannot derive a TensorRT profile for dimension {dim!r}; pass explicit profiles")


def input_profiles(inputs: Iterable[tuple[str, Iterable[int | str]]], spec: ShapeSpec,
                   feature_size: Callable[[int], int] | None = None) -> dict[str, Profile]:
    """{input name: (min, opt, max)} for a graph whose inputs have these dims."""
    profiles = {}
    for name, dims in inputs:
        dims = list(dims)
        low, opt, high = (tuple(resolve_dim(d, point, feature_size) for d in dims)
                          for point in (spec.min, spec.opt, spec.max))
        profiles[name] = (low, opt, high)
    return profiles


def onnx_input_dims(model) -> list[tuple[str, list[int | str]]]:
    """(name, dims) of an ONNX model's real inputs; a dim is its value or its symbolic name."""
    initializers = {i.name for i in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in value.type.tensor_type.shape.dim]
        found.append((value.name, dims))
    return found


def profiles_to_json(profiles: Mapping[str, Profile]) -> dict[str, list[list[int]]]:
    return {name: [list(dims) for dims in profile] for name, profile in sorted(profiles.items())}


def profile_covers(profile: Sequence[Sequence[int]], shape: Iterable[int]) -> bool:
    """Whether `shape` lies within the profile's min and max (a Profile, or one read from JSON)."""
    shape = tuple(shape)
    low, _, high = profile
    return len(shape) == len(low) and all(a <= s <= b for a, s, b in zip(low, shape, high))
