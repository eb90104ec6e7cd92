"""A whole fuse of one preset as a single ONNX graph (`semfuse-rt export`), for machines
without Python or torch: a C++ service, onnxruntime in Node.js, a TensorRT engine.

    images (K, H, W, 3) uint8 RGB  ->  fused (H, W, 3) uint8 RGB,  fused_luma (H, W) uint8

K is fixed at export; H and W are dynamic. The graph is the Fuser's own pipeline traced
once: the start (engine/start/initialisation.py's `initial_image`, or the DT-CWT start graph),
the features of each input and the rule (its torch form, kernels/rules/), the preset's Adam steps
unrolled (the explicit gradient of export/graphs/gradient_graph.py and kernels/torch_rules.py's
`adam_update`), the mean base layer (export/graphs/base_layer_graph.py), the clamp and the
rounding of sources.finish. `fused_luma` is what `finish` makes of a grey set (BT.601
luma of the clamped result, rounded once), so a grey result is not rounded twice.

Sizes. The pyramid-blend starts' depths follow the image: the deep pyramid goes down to a
shorter side of 1 or 2 pixels (1 + floor(log2 shorter) levels), the local one to a band of
at least 8, the whole one to at least 3 (engine/start/pyramid_depth.py). A traced graph holds one
depth, so a graph with such a start accepts the shorter sides that give the same depths:
one octave, 2^k .. 2^(k+1) - 1, for `pyramid-blend`, and 3 * 2^k .. 3 * 2^(k+1) - 1 for
`whole-pyramid-blend`. There every level's size is a function of H and W that the graph
computes, and no level's side is 1 except possibly the deep pyramid's last, which nothing
reduces further. The other starts (mean,
max, DT-CWT) take any size from the layer's and the base layer's least. Other sizes are
refused inside the graph: a Reshape named for the range fails (ONNX has no assertion op),
so no runtime can return a wrong image for them; the range is also in the manifest and in
the model's metadata, where the deploy scripts check it first.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import warnings
from dataclasses import dataclass

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.onnx import symbolic_helper
from torch.overrides import TorchFunctionMode

from semfuse_rt.engine.start.initialisation import STARTS, initial_image
from semfuse_rt.engine.limits.option_checks import smallest_side
from semfuse_rt.engine.start.pyramid_blend import luma
from semfuse_rt.engine.start.pyramid_depth import same_depth_sides
from semfuse_rt.engine.io.sources import MIN_SIDE
from semfuse_rt import gaussian_blur
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.graphs import base_layer_graph, dtcwt_graph, gradient_graph
from semfuse_rt.export.graphs.base_layer_graph import MeanBaseLayer
from semfuse_rt.export.graphs.dtcwt_graph import DtcwtStartGraph
from semfuse_rt.export.graphs.gradient_graph import ExplicitLossGradient, NormalisedFeatures
from semfuse_rt.export.graphs.manifest import source_sha256
from semfuse_rt.export.networks.vgg19 import VGG19Features
from semfuse_rt.export.networks.weights import VGG19Weights
from semfuse_rt.kernels.adam_scalars import AdamSchedule
from semfuse_rt.kernels.rules import rule_modules
from semfuse_rt.kernels.rules.base import FeatureRule
from semfuse_rt.kernels.torch_rules import adam_update

INPUT = "images"
OUTPUTS = ("fused", "fused_luma")
METADATA_KEY = "semfuse_rt"  # the model's metadata entry that holds the input contract, as JSON
# Each step adds a features pass and its transpose to the graph; beyond this the file and
# the export time grow past what a deployment wants (`paper`'s 100 steps fit).
MAX_STEPS = 100


@dataclass(frozen=True)
class FuseSettings:
    """What one exported graph bakes in: a Fuser's resolved options."""

    layer: str
    rule: FeatureRule
    init: str
    schedule: AdamSchedule
    mean_base: float

    def check(self) -> None:
        if self.schedule.steps > MAX_STEPS:
            raise SemfuseError(f"--steps {self.schedule.steps} is more than an exported graph unrolls; use at most "
                               f"{MAX_STEPS} (each step is a copy of the features and gradient graph)")


def accepted_sides(settings: FuseSettings, height: int, width: int) -> tuple[int, int | None]:
    """The shorter image sides the graph takes, (least, most or None), for a graph traced at
    height x width (which only a pyramid-blend start's depth depends on; see the module)."""
    least = max(MIN_SIDE, smallest_side(settings.layer), math.ceil(settings.mean_base))
    pyramids = STARTS[settings.init].pyramid_coarsest
    if not pyramids:
        return least, None
    shorter = min(height, width)
    if shorter < least:
        raise SemfuseError(f"--size {width}x{height} is too small: this preset needs images of at least "
                           f"{least} pixels a side")
    ranges = [same_depth_sides(shorter, coarsest) for coarsest in pyramids]
    return max(least, *(low for low, _ in ranges)), min(high for _, high in ranges)


class WholeFuse(nn.Module):
    """images (K, H, W, 3) uint8 -> (fused (H, W, 3) uint8, fused_luma (H, W) uint8)."""

    def __init__(self, weights: VGG19Weights | None, settings: FuseSettings):
        """`weights`: None for a graph without steps, which holds no network."""
        super().__init__()
        self.settings = settings
        if settings.schedule.steps:
            if weights is None:
                raise ValueError("a graph with optimisation steps needs the VGG19 weights")
            vgg = VGG19Features(weights.convs, settings.layer)
            self.features = NormalisedFeatures(vgg, weights.normalisation)
            self.gradient = ExplicitLossGradient(vgg, weights.normalisation)
            rule = settings.rule
            self.rule = rule.module()
        verify = STARTS[settings.init].dtcwt_verify
        # The graph form of the DT-CWT start: dtcwt_start's eager shortcuts (copying a channel
        # equal to another, float64 on the CPU) depend on the pixels, which a trace cannot.
        self.dtcwt = DtcwtStartGraph(verify) if verify is not None else None
        self.base = MeanBaseLayer(settings.mean_base) if settings.mean_base else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = images.to(torch.float32).permute(0, 3, 1, 2)  # uint8 only at the edges
        image = self.dtcwt(pixels) if self.dtcwt is not None else initial_image(pixels, self.settings.init)
        schedule = self.settings.schedule
        if schedule.steps:
            target = self.rule(self.features(pixels))
            image = image.clone()
            m, v = torch.zeros_like(image), torch.zeros_like(image)
            for t in range(1, schedule.steps + 1):
                _, grad = self.gradient(image, target)
                adam_update(image, m, v, grad, t, schedule)
        if self.base is not None:
            image = self.base(image, pixels)
        rgb = image.clamp(0.0, 255.0)
        # The casts last: the outputs are what they produce (_uint8_at_the_edges).
        fused = rgb[0].permute(1, 2, 0).round().to(torch.uint8)
        grey = luma(rgb)[0, 0].clamp(0.0, 255.0).round().to(torch.uint8)
        return fused, grey


# Identifies the code a graph was traced from, for the manifest.
GRAPH_SOURCE_SHA256 = source_sha256(gradient_graph, *rule_modules(), base_layer_graph, dtcwt_graph, gaussian_blur,
                                     sys.modules["semfuse_rt.engine.start.pyramid_blend"],
                                     sys.modules["semfuse_rt.engine.start.initialisation"], sys.modules[__name__])


@symbolic_helper.parse_args("v", "v", "v", "f")
def _addcdiv(g, accumulated, numerator, denominator, value: float):
    """aten::addcdiv (Adam's update step), which the TorchScript exporter lacks: the
    same arithmetic as torch's, accumulated + value * (numerator / denominator)."""
    scale = g.op("Constant", value_t=torch.tensor(value, dtype=torch.float32))
    return g.op("Add", accumulated, g.op("Mul", g.op("Div", numerator, denominator), scale))


class _OutWritesAsCopies(TorchFunctionMode):
    """`torch.f(..., out=t)` traced as `t.copy_(torch.f(...))`: the tracer does not see an
    out= write (later reads of t would get its old value, and the exporter has no symbolic
    for the out= form), while copy_ is an in-place op the exporter follows. The blend's
    running maxima over the inputs are written this way."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        out = kwargs.pop("out", None)
        if not isinstance(out, torch.Tensor):
            return func(*args, **kwargs) if out is None else func(*args, out=out, **kwargs)
        return out.copy_(func(*args, **kwargs))


@contextlib.contextmanager
def _exportable(opset: int):
    torch.onnx.register_custom_op_symbolic("aten::addcdiv", _addcdiv, opset)
    try:
        with _OutWritesAsCopies():
            yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::addcdiv", opset)


def _traced(module: WholeFuse, count: int, height: int, width: int, opset: int) -> onnx.ModelProto:
    images = (torch.rand(count, height, width, 3) * 255).to(torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _exportable(opset):
        # The tracer warns of every size it turns into a constant: the pyramid's depth,
        # which accepted_sides accounts for, and the unrolled loop's step count.
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (images,), buffer, dynamo=False,  # type: ignore[arg-type]
                          opset_version=opset,
                          input_names=[INPUT], output_names=list(OUTPUTS),
                          dynamic_axes={INPUT: {1: "height", 2: "width"}, OUTPUTS[0]: {0: "height", 1: "width"},
                                        OUTPUTS[1]: {0: "height", 1: "width"}},
                          do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _uint8_at_the_edges(model: onnx.ModelProto) -> None:
    """Intermediate uint8 tensors (the blend's labels) become int32: TensorRT takes uint8
    only as a network's input or output. Where, Equal and Max take either type."""
    edges = {value.name for value in (*model.graph.input, *model.graph.output)}
    for node in model.graph.node:
        if node.op_type == "Cast" and not set(node.output) & edges:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == TensorProto.UINT8:
                    attribute.i = TensorProto.INT32
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.UINT8:
                _to_int32(attribute.t)
    for initializer in model.graph.initializer:
        if initializer.data_type == TensorProto.UINT8:
            _to_int32(initializer)
    del model.graph.value_info[:]  # their element types may have changed; shape inference remakes them


def _to_int32(tensor: onnx.TensorProto) -> None:
    values = onnx.numpy_helper.to_array(tensor).astype("int32")
    tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))


def size_check_name(low: int, high: int | None) -> str:
    """The name of the node that fails for other sizes: ONNX Runtime's message quotes it."""
    most = f" to {high}" if high is not None else " or more"
    return f"size check: the shorter side of the images must be {low}{most} pixels"


def _guard_sizes(model: onnx.ModelProto, low: int, high: int | None) -> None:
    """Before each output's final cast to uint8, a Reshape to its own shape times (2 - ok),
    ok = 1 where the input's shorter side is in [low, high]: an identity then, else a shape
    that cannot hold the data, so the run fails (a zero would not do: Reshape reads 0 as
    "keep"). The uint8 tensors stay the network's edges (TensorRT takes them nowhere else)."""
    graph = model.graph
    name = size_check_name(low, high)
    constants: dict[str, list[int]] = {"size_check_hw_start": [1], "size_check_hw_end": [3], "size_check_low": [low],
                                       "size_check_two": [2]}
    if high is not None:
        constants["size_check_high"] = [high]
    for key, value in constants.items():
        dims = [len(value)] if key.endswith(("start", "end")) else []
        graph.initializer.append(helper.make_tensor(key, TensorProto.INT64, dims, value))
    nodes = [
        helper.make_node("Shape", [INPUT], ["size_check_shape"]),
        helper.make_node("Slice", ["size_check_shape", "size_check_hw_start", "size_check_hw_end"], ["size_check_hw"]),
        helper.make_node("ReduceMin", ["size_check_hw"], ["size_check_shorter"], keepdims=0),
        helper.make_node("GreaterOrEqual", ["size_check_shorter", "size_check_low"], ["size_check_ok_low"]),
    ]
    ok = "size_check_ok_low"
    if high is not None:
        nodes += [helper.make_node("LessOrEqual", ["size_check_shorter", "size_check_high"], ["size_check_ok_high"]),
                  helper.make_node("And", ["size_check_ok_low", "size_check_ok_high"], ["size_check_ok"])]
        ok = "size_check_ok"
    nodes += [helper.make_node("Cast", [ok], ["size_check_ok_int"], to=TensorProto.INT64),
              helper.make_node("Sub", ["size_check_two", "size_check_ok_int"], ["size_check_factor"])]
    outputs = {value.name for value in graph.output}
    casts = [node for node in graph.node if node.op_type == "Cast" and node.output[0] in outputs]
    if len(casts) != len(outputs):
        raise AssertionError("each output of the whole-fuse graph is a cast to uint8")
    for cast in casts:
        value, checked = cast.input[0], f"{cast.output[0]}_size_checked"
        nodes += [helper.make_node("Shape", [value], [f"{checked}_shape"]),
                  helper.make_node("Mul", [f"{checked}_shape", "size_check_factor"], [f"{checked}_new_shape"]),
                  helper.make_node("Reshape", [value, f"{checked}_new_shape"], [checked],
                                   name=f"{name} ({cast.output[0]})")]
        cast.input[0] = checked
    kept = [node for node in graph.node if node not in casts]  # the casts last: they read the checked values
    del graph.node[:]
    graph.node.extend([*kept, *nodes, *casts])


def _fold_identities(model: onnx.ModelProto) -> None:
    """Consumers of an Identity of an initializer read the initializer itself: TensorRT needs a
    convolution's weights to be constants, and the exporter hands the gradient's convolutions
    the features' weights through Identity nodes."""
    graph = model.graph
    constants = {tensor.name for tensor in graph.initializer}
    aliases = {node.output[0]: node.input[0] for node in graph.node
               if node.op_type == "Identity" and node.input[0] in constants}
    outputs = {value.name for value in graph.output}
    aliases = {alias: source for alias, source in aliases.items() if alias not in outputs}
    for node in graph.node:
        node.input[:] = [aliases.get(name, name) for name in node.input]
    kept = [node for node in graph.node if not (node.op_type == "Identity" and node.output[0] in aliases)]
    del graph.node[:]
    graph.node.extend(kept)


def _constants_as_initializers(model: onnx.ModelProto) -> None:
    """Each Constant node becomes an initializer, one per distinct value: the tracer writes a
    node for every literal of every pyramid level (about half of the blend graph's nodes,
    most of them the same few taps and indices), and each one costs ONNX Runtime time at every
    session load, in Node.js and the browser as much as in Python."""
    graph = model.graph
    outputs = {value.name for value in graph.output}
    first: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    aliases: dict[str, str] = {}
    kept = []
    for node in graph.node:
        value = node.attribute[0].t if len(node.attribute) == 1 and node.attribute[0].name == "value" else None
        if node.op_type != "Constant" or value is None or node.output[0] in outputs:
            kept.append(node)
            continue
        key = (value.data_type, tuple(value.dims), numpy_helper.to_array(value).tobytes())
        if key in first:
            aliases[node.output[0]] = first[key]
            continue
        first[key] = node.output[0]
        tensor = TensorProto()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
    for node in kept:
        node.input[:] = [aliases.get(name, name) for name in node.input]
    del graph.node[:]
    graph.node.extend(kept)


def _declare_output_shapes(model: onnx.ModelProto, terms: dict) -> None:
    """The outputs' shapes as the contract states them: the exporter leaves `fused`'s three
    channels a symbol, which a Triton config or a TensorRT binding would have to take on trust
    (the checker's shape inference, run after, refuses a declaration it contradicts)."""
    for value in model.graph.output:
        for dim, size in zip(value.type.tensor_type.shape.dim, terms["outputs"][value.name]["shape"]):
            if isinstance(size, int):
                dim.dim_value = size
            else:
                dim.dim_param = size


def contract(settings: FuseSettings, count: int, sides: tuple[int, int | None]) -> dict:
    """What a caller must know to run the graph: the model's metadata, and part of the manifest."""
    return {
        "inputs": {INPUT: {"shape": [count, "height", "width", 3], "dtype": "uint8", "layout": "NHWC",
                           "channels": "RGB; a grey image replicated to all three"}},
        "outputs": {OUTPUTS[0]: {"shape": ["height", "width", 3], "dtype": "uint8", "use": "colour sets"},
                    OUTPUTS[1]: {"shape": ["height", "width"], "dtype": "uint8",
                                 "use": "grey sets (BT.601 luma of the result)"}},
        "images": count,
        "shorter_side": list(sides),
    }


def export_whole_fuse(weights: VGG19Weights | None, settings: FuseSettings, count: int, height: int, width: int,
                      opset: int) -> tuple[bytes, dict]:
    """The graph's bytes and its contract (see `contract`), for images of height x width's
    octave where the start is a pyramid blend (see the module), any size otherwise."""
    settings.check()
    sides = accepted_sides(settings, height, width)
    trace_side = sides[0] if STARTS[settings.init].pyramid_coarsest else max(sides[0], 64)
    # Not simplified (onnxslim): on these long graphs it takes minutes (quadratic in the
    # steps) and ONNX Runtime runs the result no faster.
    model = _traced(WholeFuse(weights, settings), count, trace_side, trace_side, opset)
    _uint8_at_the_edges(model)
    _fold_identities(model)
    _constants_as_initializers(model)
    _guard_sizes(model, *sides)
    terms = contract(settings, count, sides)
    _declare_output_shapes(model, terms)
    helper.set_model_props(model, {METADATA_KEY: json.dumps(terms, sort_keys=True)})
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(), terms
