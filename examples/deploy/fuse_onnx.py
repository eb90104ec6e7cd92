"""Fuse registered images with a graph from `semfuse-rt export`, without semfuse-rt or torch:
onnxruntime, numpy and Pillow only.

    python fuse_onnx.py fuse.onnx A.png B.png [C.png ...] -o fused.png

All inputs grey (8-bit L) give a grey result, all RGB an RGB one, as `semfuse-rt fuse`
does; the graph was exported for a number of inputs and, for the blend preset, a range of
sizes, which are checked first.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime
from PIL import Image, ImageOps


def fail(message: str) -> None:
    print(f"fuse_onnx: error: {message}", file=sys.stderr)
    sys.exit(2)


def read(path: str) -> np.ndarray:
    try:
        image = ImageOps.exif_transpose(Image.open(path))
    except OSError as error:
        fail(f"{path}: cannot read ({error})")
    if image.mode not in ("L", "RGB"):
        fail(f"{path}: mode {image.mode}; convert it to 8-bit grey (L) or RGB first")
    return np.asarray(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()

    session = onnxruntime.InferenceSession(args.graph, providers=["CPUExecutionProvider"])
    terms = json.loads(session.get_modelmeta().custom_metadata_map["semfuse_rt"])
    images = [read(path) for path in args.inputs]
    if len(images) != terms["images"]:
        fail(f"{args.graph} fuses {terms['images']} images; got {len(images)}")
    if len({image.shape[:2] for image in images}) != 1:
        fail("the inputs differ in size; fusion needs registered images of one size")
    grey = [image.ndim == 2 for image in images]
    if any(grey) and not all(grey):
        fail("grey and colour inputs mixed; semfuse-rt fuse keeps the colour inputs' chroma, this example "
             "does not: convert them all to grey or all to RGB")
    low, high = terms["shorter_side"]
    shorter = min(images[0].shape[:2])
    if shorter < low or (high is not None and shorter > high):
        most = f" to {high}" if high is not None else " or more"
        fail(f"{args.graph} takes images whose shorter side is {low}{most} pixels; these have {shorter} "
             "(export another with semfuse-rt export --size)")

    stack = np.stack([np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image for image in images])
    fused, fused_luma = session.run(["fused", "fused_luma"], {"images": stack})
    Image.fromarray(fused_luma if all(grey) else fused).save(args.output)


if __name__ == "__main__":
    main()
