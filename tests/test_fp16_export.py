"""`semfuse-rt export --fp16`: the whole-fuse graph in float16, its error against float32 in the
manifest (issue 30)."""
import json

import numpy as np
import onnx
from onnx import TensorProto, helper

from conftest import run_main


def test_export_fp16_computes_in_float16_with_uint8_edges_and_records_its_error(monkeypatch, capsys, tmp_path):
    out = tmp_path / "half.onnx"
    code, stdout, err = run_main(monkeypatch, capsys, "export", "-o", out, "--size", "64x64", "--fp16", "-q")
    assert code in (0, None), err
    assert " in float16 (against float32 on the bundled pair: at most " in stdout
    manifest = json.loads((tmp_path / "half.onnx.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["tensorrt_problems"] == []
    error = manifest["fp16_error"]
    assert error["images"] == "examples/lytro-01-A.jpg, -B.jpg (A, B) at 127x127"
    for output in ("fused", "fused_luma"):
        # Measured: 2 and 1 levels at most, 0.08 on average.
        assert 0 <= error[output]["max_levels"] <= 4 and 0 <= error[output]["mean_levels"] <= 0.5, error
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    edges = [value.type.tensor_type.elem_type for value in (*model.graph.input, *model.graph.output)]
    assert edges == [TensorProto.UINT8] * 3
    to_half = [node for node in model.graph.node if node.op_type == "Cast"
               and helper.get_attribute_value(node.attribute[0]) == TensorProto.FLOAT16]
    assert to_half  # the arithmetic is float16 after the input's cast
    assert "semfuse_rt" in {prop.key for prop in model.metadata_props}  # the input contract survives

    # bench --graph reports how far the float16 graph is from the package's float32 fuse, and
    # does not hold it to float32's tolerance.
    code, stdout, err = run_main(monkeypatch, capsys, "bench", "--graph", out, "--runs", 1, "--warmup", 0,
                                 "--out", tmp_path / "bench", "-q")
    assert code in (0, None), err
    assert "(a float16 graph, not held to float32's tolerance)" in stdout
    agreement = json.loads((tmp_path / "bench" / "bench.json").read_text())["pipeline"]["agreement"]
    assert agreement["tolerance_levels"] is None and agreement["max_levels"] >= 0


def test_the_float16_error_is_measured_on_the_reference_images():
    """Two stand-in graphs of the whole fuse's contract: one gives the first image, the other
    that plus 3 where its red channel is past 128; the measured error is that."""
    from semfuse_rt.engine.deploy.half_precision import float16_error, reference_images

    def graph(offset: int) -> bytes:
        nodes = [helper.make_node("Gather", ["images", "zero"], ["first"], axis=0),
                 helper.make_node("Cast", ["first"], ["wide"], to=TensorProto.INT32),
                 helper.make_node("Gather", ["wide", "zero"], ["red"], axis=2),
                 helper.make_node("Greater", ["red", "half"], ["bright"]),
                 helper.make_node("Cast", ["bright"], ["bright_int"], to=TensorProto.INT32),
                 helper.make_node("Mul", ["bright_int", "offset"], ["shift"]),
                 helper.make_node("Unsqueeze", ["shift", "last"], ["shift3"]),
                 helper.make_node("Add", ["wide", "shift3"], ["moved"]),
                 helper.make_node("Clip", ["moved", "low", "high"], ["clipped"]),
                 helper.make_node("Cast", ["clipped"], ["fused"], to=TensorProto.UINT8),
                 helper.make_node("Cast", ["red"], ["fused_luma"], to=TensorProto.UINT8)]
        constants = [helper.make_tensor("zero", TensorProto.INT64, [], [0]),
                     helper.make_tensor("half", TensorProto.INT32, [], [128]),
                     helper.make_tensor("offset", TensorProto.INT32, [], [offset]),
                     helper.make_tensor("last", TensorProto.INT64, [1], [2]),
                     helper.make_tensor("low", TensorProto.INT32, [], [0]),
                     helper.make_tensor("high", TensorProto.INT32, [], [255])]
        model = helper.make_model(helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("images", TensorProto.UINT8, [2, "h", "w", 3])],
            [helper.make_tensor_value_info("fused", TensorProto.UINT8, ["h", "w", 3]),
             helper.make_tensor_value_info("fused_luma", TensorProto.UINT8, ["h", "w"])], constants),
            opset_imports=[helper.make_opsetid("", 17)])
        return model.SerializeToString()

    terms = {"images": 2, "shorter_side": [8, None]}
    described, images = reference_images(terms)
    assert images.shape == (2, 520, 520, 3) and described.endswith("(A, B) at 520x520")
    error = float16_error(graph(0), graph(3), terms)
    first = images[0].astype(int)
    moved = np.clip(first + 3 * (first[:, :, :1] > 128), 0, 255) - first
    assert error["fused"] == {"max_levels": 3, "mean_levels": round(float(moved.mean()), 4),
                              "share_over_one": round(float((moved > 1).mean()), 6)}
    assert error["fused_luma"]["max_levels"] == 0
    # A graph for 3 images of shorter side 64 to 127: the pair repeated, made smaller.
    described, images = reference_images({"images": 3, "shorter_side": [64, 127]})
    assert images.shape == (3, 127, 127, 3) and "(A, B, A) at 127x127" in described
