"""Whether TensorRT 10's ONNX parser can take a graph, judged without TensorRT: its operators
against the pinned list of those the parser imports (tensorrt10_onnx_ops.txt), the
restrictions of that list that these graphs could meet, and no data-dependent shapes
(every shape a node computes follows from the inputs' shapes and constants alone)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import onnx
from onnx import TensorProto

OPS_FILE = Path(__file__).with_name("tensorrt10_onnx_ops.txt")
# Operators whose output shape depends on the data, not only on the input shapes.
DATA_DEPENDENT = frozenset({"NonZero", "Loop", "If", "Scan", "Unique", "Compress", "NonMaxSuppression",
                            "StringSplit", "SequenceConstruct", "SplitToSequence"})
# Inputs (by position) that set an output's shape: they must be computed from shapes and constants.
SHAPE_INPUTS = {"Reshape": (1,), "Expand": (1,), "Slice": (1, 2, 3, 4), "Range": (0, 1, 2), "ConstantOfShape": (0,),
                "Tile": (1,), "Pad": (1, 3), "Resize": (2, 3), "TopK": (1,), "OneHot": (1,), "Squeeze": (1,),
                "Unsqueeze": (1,), "Upsample": (1,), "Split": (1,)}
CONSTANT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,)}


@lru_cache(maxsize=None)
def supported_ops() -> frozenset[str]:
    names = (line.split("#")[0].strip() for line in OPS_FILE.read_text().splitlines())
    return frozenset(name for name in names if name)


def problems(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT 10's parser would refuse the graph, one line each; empty if it would not."""
    graph = model.graph
    found = []
    ops = {node.op_type for node in graph.node if node.domain in ("", "ai.onnx")}
    found += [f"operator {op} is not one TensorRT's parser imports" for op in sorted(ops - supported_ops())]
    found += [f"operator {op} has a data-dependent output shape" for op in sorted(ops & DATA_DEPENDENT)]
    constant = {tensor.name for tensor in graph.initializer}
    constant |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    from_shapes = set(constant)  # computed from shapes and constants only
    for node in graph.node:  # in topological order, as ONNX requires
        if node.op_type == "Shape" or all(name in from_shapes for name in node.input if name):
            from_shapes.update(node.output)
        for position in SHAPE_INPUTS.get(node.op_type, ()):
            if position < len(node.input) and node.input[position] and node.input[position] not in from_shapes:
                found.append(f"{node.op_type} {node.name or node.output[0]}: its output shape depends on the data")
        for position in CONSTANT_INPUTS.get(node.op_type, ()):
            if position < len(node.input) and node.input[position] and node.input[position] not in constant:
                found.append(f"{node.op_type} {node.name or node.output[0]}: input {position} must be a constant")
        if node.op_type == "MaxPool" and len([out for out in node.output if out]) > 1:
            found.append(f"MaxPool {node.name or node.output[0]}: TensorRT has no Indices output")
    found += _type_problems(model)
    return found


def _type_problems(model: onnx.ModelProto) -> list[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    edges = {value.name for value in (*graph.input, *graph.output)}
    found = []
    for value in graph.value_info:
        element = value.type.tensor_type.elem_type
        if element == TensorProto.DOUBLE:
            found.append(f"tensor {value.name} is float64")
        elif element == TensorProto.UINT8 and value.name not in edges:
            found.append(f"tensor {value.name} is uint8 inside the network")
    return found
