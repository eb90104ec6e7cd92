"""`semfuse-rt export --fp16`: the whole-fuse graph with float16 arithmetic (TensorRT's and the
GPUs' fast path), its uint8 inputs and outputs unchanged, and its error against the float32
graph measured on the bundled pair.

The conversion is ONNX Runtime's own (onnxruntime.transformers.float16), which keeps the
operators that need float32 in float32 behind casts; it leaves nodes out of topological
order where it adds casts, which the ONNX checker and TensorRT's parser refuse, so they are
sorted again here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from semfuse_rt.engine.deploy.whole_fuse_graph import INPUT, OUTPUTS
from semfuse_rt.engine.io.images import load_image

# The bundled pair (examples/ in a clone); an installed wheel lacks it, and the synthetic
# pair of `bench` stands in.
BUNDLED_PAIR = tuple(Path(__file__).resolve().parents[3] / "examples" / f"lytro-01-{label}.jpg" for label in "AB")
REFERENCE_SIDE = 520  # the reference images' shorter side, or the nearest the graph takes


def _topologically_sorted(graph: onnx.GraphProto) -> None:
    known = {value.name for value in (*graph.input, *graph.initializer)} | {""}  # "": an omitted input
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise AssertionError(f"the float16 graph has a cycle or an undefined input at {waiting[0].name}")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def to_float16(data: bytes) -> bytes:
    """The float32 graph's bytes -> the float16 graph's."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(data), keep_io_types=True)
    _topologically_sorted(model.graph)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def reference_images(terms: dict) -> tuple[str, np.ndarray]:
    """The images the error is measured on, as the graph's input, and what they are: the
    bundled pair (repeated to the graph's K), resized to a size the graph takes."""
    import cv2

    if all(path.is_file() for path in BUNDLED_PAIR):
        pair, name = [load_image(path) for path in BUNDLED_PAIR], "examples/lytro-01-A.jpg, -B.jpg"
    else:
        import tempfile

        from semfuse_rt.engine.io.synthetic import synthetic_pair

        with tempfile.TemporaryDirectory(prefix="semfuse-fp16-") as folder:
            pair, name = [load_image(path) for path in synthetic_pair(Path(folder))], "bench's synthetic pair"
    low, high = terms["shorter_side"]
    side = max(low, min(REFERENCE_SIDE, high if high is not None else REFERENCE_SIDE))
    height, width = pair[0].shape[:2]
    scale = side / min(height, width)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))  # (width, height)
    if size != (width, height):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        pair = [cv2.resize(image, size, interpolation=interpolation) for image in pair]
    count = terms["images"]
    images = [pair[index % 2] for index in range(count)]
    labels = ", ".join("AB"[index % 2] for index in range(count))
    return f"{name} ({labels}) at {size[0]}x{size[1]}", np.stack(images)


def float16_error(fp32: bytes, fp16: bytes, terms: dict) -> dict:
    """Grey levels between the two graphs' outputs on the reference images: per output, the
    largest difference, the mean, and the share of values more than 1 apart."""
    import onnxruntime

    described, images = reference_images(terms)
    results = [onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"]).run(list(OUTPUTS),
                                                                                          {INPUT: images})
               for data in (fp32, fp16)]
    error: dict = {"images": described}
    for name, full, half in zip(OUTPUTS, *results):
        difference = np.abs(full.astype(np.int32) - half.astype(np.int32))
        error[name] = {"max_levels": int(difference.max()), "mean_levels": round(float(difference.mean()), 4),
                       "share_over_one": round(float((difference > 1).mean()), 6)}
    return error
