"""Reduced-precision ONNX graphs for strongly typed TensorRT builds.

TensorRT 11 removed the FP16/BF16 builder flags (10.x deprecated them): a network's types
come from the graph. This pass writes them in: float initializers and constants become
fp16/bf16, Casts to float cast to that type, the float graph inputs are cast down on entry
and the float outputs cast back to fp32, so the engine's IO stays fp32 and callers never see
the precision.

Some outputs must stay fp32 end to end: the loss is a sum over millions of squared
residuals, which overflows fp16 (65504) long before the optimisation is done. Nodes that
feed only such outputs keep fp32, with a Cast up where they read a reduced tensor.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from semfuse_rt.errors import SemfuseError

LOW_TYPES = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
# Inputs whose type the ONNX spec fixes as float32 whatever the data type (Resize's
# roi and scales, Upsample's scales): lowering them would make the graph invalid.
_FP32_ONLY_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}


def _to_low(array: np.ndarray, low: int, name: str) -> TensorProto:
    array = np.asarray(array, dtype=np.float32)
    if low == TensorProto.FLOAT16:
        converted = array.astype(np.float16)
        if not np.isfinite(converted[np.isfinite(array)]).all():
            raise SemfuseError(f"{name} holds values beyond fp16's range; build with --precision fp32 or bf16")
        raw = converted.tobytes()
    else:
        bits = array.view(np.uint32).astype(np.uint64)
        sixteen = np.uint64(16)
        # Round to nearest even on the 16 bits that are dropped.
        rounded = (bits + np.uint64(0x7FFF) + ((bits >> sixteen) & np.uint64(1))) >> sixteen
        raw = rounded.astype(np.uint16).tobytes()
    return helper.make_tensor(name, low, array.shape, raw, raw=True)


def _fp32_nodes(nodes: list[onnx.NodeProto], outputs: list[str], keep: Iterable[str]) -> set[int]:
    """Indices of nodes that feed only the outputs in `keep`."""
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}

    def ancestors(names: Iterable[str]) -> set[int]:
        seen: set[int] = set()
        queue = deque(producer[n] for n in names if n in producer)
        while queue:
            index = queue.popleft()
            if index in seen:
                continue
            seen.add(index)
            queue.extend(producer[n] for n in nodes[index].input if n in producer)
        return seen

    keep = set(keep)
    unknown = keep - set(outputs)
    if unknown:
        raise SemfuseError(f"no graph output named {', '.join(sorted(unknown))}")
    return ancestors(keep) - ancestors([o for o in outputs if o not in keep])


def _lower_attributes(node: onnx.NodeProto, low: int) -> None:
    """Cast-to-float, ConstantOfShape and Constant nodes name their float type themselves."""
    for attribute in node.attribute:
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
            attribute.i = low
        elif attribute.name == "value" and attribute.type == onnx.AttributeProto.TENSOR \
                and attribute.t.data_type == TensorProto.FLOAT:
            attribute.t.CopyFrom(_to_low(numpy_helper.to_array(attribute.t), low, attribute.t.name))
    if node.op_type == "Constant":
        for attribute in list(node.attribute):
            if attribute.name in ("value_float", "value_floats"):
                values = np.asarray(helper.get_attribute_value(attribute), dtype=np.float32)
                node.attribute.remove(attribute)
                node.attribute.append(helper.make_attribute("value", _to_low(values, low, "")))


def lower_precision(model: onnx.ModelProto, precision: str, keep_fp32_outputs: Iterable[str] = (),
                    keep_fp32_nodes: Iterable[str] = ()) -> onnx.ModelProto:
    """A copy of `model` computing in `precision` ('fp32' returns an unchanged copy).

    Nodes feeding only `keep_fp32_outputs`, and the nodes named in `keep_fp32_nodes`, stay fp32.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if precision == "fp32":
        return result
    if precision not in LOW_TYPES:
        raise SemfuseError(f"unknown precision {precision!r}; use fp32, fp16 or bf16")
    low = LOW_TYPES[precision]
    graph = result.graph
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise SemfuseError(f"cannot lower {node.op_type} with subgraphs to {precision}")

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as error:  # onnx raises several error types here
        raise SemfuseError(f"cannot infer the graph's types to lower it to {precision}: {error}") from error
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    initializers = {init.name: init for init in graph.initializer}
    types.update({name: init.data_type for name, init in initializers.items()})
    is_float = {name for name, kind in types.items() if kind == TensorProto.FLOAT}

    nodes = list(graph.node)
    outputs = [o.name for o in graph.output]
    keep = _fp32_nodes(nodes, outputs, keep_fp32_outputs)
    keep |= {i for i, node in enumerate(nodes) if node.name in set(keep_fp32_nodes)}

    # Float outputs computed in low precision are renamed inside the graph; a final Cast
    # gives the fp32 tensor the output's name.
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}
    renamed = {o: f"{o}__{precision}" for o in outputs
               if o in is_float and o in producer and producer[o] not in keep}
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renamed.get(name, name)
    is_float |= set(renamed.values())

    region = {name: TensorProto.FLOAT for name in is_float if name not in producer}  # inputs, initializers
    lowered_inits: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []
    suffix: dict[int, str] = {TensorProto.FLOAT: "fp32", low: precision}

    def as_type(name: str, want: int) -> str:
        if region.get(name, want) == want:
            return name
        if name in initializers and want == low:
            if name not in lowered_inits:
                lowered = _to_low(numpy_helper.to_array(initializers[name]), low, f"{name}__{precision}")
                graph.initializer.append(lowered)
                lowered_inits[name] = lowered.name
            return lowered_inits[name]
        key = (name, want)
        if key not in casts:
            casts[key] = f"{name}__to_{suffix[want]}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=want,
                                              name=f"{name}__cast_{suffix[want]}"))
        return casts[key]

    for index, node in enumerate(nodes):
        computes_in = TensorProto.FLOAT if index in keep else low
        for i, name in enumerate(node.input):
            if name in is_float:
                fixed = i in _FP32_ONLY_INPUTS.get(node.op_type, ())
                node.input[i] = as_type(name, TensorProto.FLOAT if fixed else computes_in)
        if computes_in == low:
            _lower_attributes(node, low)
        new_nodes.append(node)
        for name in node.output:
            if name in is_float:
                region[name] = computes_in

    for original, internal in renamed.items():
        new_nodes.append(helper.make_node("Cast", [internal], [original], to=TensorProto.FLOAT,
                                          name=f"{original}__cast_fp32"))

    del graph.node[:]
    graph.node.extend(new_nodes)
    # Initializers that only low-precision nodes read now have lowered copies.
    still_read = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]  # stale types; TensorRT and the checker infer them again
    try:
        # Opset 17 lists no bfloat16 for Conv (opset 22 does) though TensorRT's parser takes
        # it, so a bf16 graph gets the structural check only.
        onnx.checker.check_model(result, full_check=low == TensorProto.FLOAT16)
    except Exception as error:
        raise SemfuseError(f"lowering the graph to {precision} produced an invalid graph: {error}") from error
    return result


# --- fp16 range for the explicit gradient -------------------------------------------------
# The backward pass of VGG19 grows far past fp16's 65504 (about 2e5 at relu1_2, 3e6 at
# relu3_4 on real images), while the forward stays below 1.4e4. So the backward starts from
# s (N(I) - F*), s a power of two that brings its peak well into range, and the fp32 output
# is divided by s again: exact in binary, invisible to callers. The loss reads the
# unscaled residual.
FP16_MAX = 65504.0
SCALE_HEADROOM = 16.0  # real images peaked up to 2.4x the calibration input; larger sizes add more
UNSCALE_NODE = "gradient_unscale"


def _backward_start(model: onnx.ModelProto, target_input: str, loss_output: str) -> tuple[str, list[onnx.NodeProto]]:
    """The residual N(I) - F* and the nodes of the backward pass that read it."""
    residuals = [node for node in model.graph.node if node.op_type == "Sub" and target_input in node.input]
    if len(residuals) != 1:
        raise SemfuseError("the gradient graph has no single (features - target) node to scale for fp16")
    residual = residuals[0].output[0]
    nodes = list(model.graph.node)
    outputs = [o.name for o in model.graph.output]
    loss_only = _fp32_nodes(nodes, outputs, [loss_output])
    readers = [node for i, node in enumerate(nodes) if residual in node.input and i not in loss_only]
    if not readers:
        raise SemfuseError("the gradient graph's residual feeds no backward pass")
    return residual, readers


def calibrate_gradient_scale(model: onnx.ModelProto, feature_size: Callable[[int], int], side: int = 64,
                             seed: int = 0, target_input: str = "target", loss_output: str = "loss") -> float:
    """The power of two s that keeps the backward pass of this fp32 gradient graph within
    fp16, measured with ONNX Runtime on a random side x side image against a zero target
    (whose side is feature_size(side))."""
    import onnxruntime as ort

    _, readers = _backward_start(model, target_input, loss_output)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    backward: set[str] = set()
    queue = deque(name for node in readers for name in node.output)
    while queue:
        name = queue.popleft()
        if name in backward:
            continue
        backward.add(name)
        for node in consumers.get(name, []):
            queue.extend(node.output)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for value in onnx.shape_inference.infer_shapes(model).graph.value_info:
        if value.name in backward and value.name not in outputs \
                and value.type.tensor_type.elem_type == TensorProto.FLOAT:
            probe.graph.output.append(value)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in session.get_inputs():
        channels = value.shape[1]
        if value.name == target_input:
            feeds[value.name] = np.zeros((1, channels, feature_size(side), feature_size(side)), np.float32)
        else:
            feeds[value.name] = (rng.random((1, channels, side, side)) * 255).astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    peak = max(float(np.abs(r).max()) for name, r in zip(names, results)
               if name in backward and r.dtype == np.float32 and r.size)
    exponent = max(0, int(np.ceil(np.log2(peak * SCALE_HEADROOM / FP16_MAX))))
    return 2.0 ** -exponent


def scale_gradient(model: onnx.ModelProto, scale: float, output: str = "grad", target_input: str = "target",
                   loss_output: str = "loss") -> onnx.ModelProto:
    """A copy whose backward starts from scale * (features - target) and whose `output` is
    divided by scale again in a node named UNSCALE_NODE (keep that node fp32 when lowering)."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if scale == 1.0:
        return result
    residual, readers = _backward_start(result, target_input, loss_output)
    scaled = f"{residual}__scaled"
    for node in readers:
        for i, name in enumerate(node.input):
            if name == residual:
                node.input[i] = scaled
    scale_name, unscale_name, internal = "gradient_scale", "gradient_unscale_factor", f"{output}__scaled"
    result.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), scale_name),
                                     numpy_helper.from_array(np.array(1.0 / scale, np.float32), unscale_name)])
    # Right after the residual, so the graph stays topologically sorted.
    position = next(i for i, node in enumerate(result.graph.node) if residual in node.output) + 1
    result.graph.node.insert(position, helper.make_node("Mul", [residual, scale_name], [scaled],
                                                        name="gradient_scale"))
    for node in result.graph.node:
        for i, name in enumerate(node.output):
            if name == output:
                node.output[i] = internal
        for i, name in enumerate(node.input):
            if name == output:
                node.input[i] = internal
    result.graph.node.append(helper.make_node("Mul", [internal, unscale_name], [output], name=UNSCALE_NODE))
    return result
