"""ONNX export of the CAM graph (export/graphs/cam_graph.py) into an engine directory.

The directory (one per classifier weights, input size and opset) holds `cam_classes.onnx`
(inputs image + classes) and, for each K asked for, `cam_top{K}.onnx` (input image; the K
most probable classes picked in the graph), plus a manifest. The batch axis is dynamic; the
image side is the classifier's input size, fixed, so every layer's shape is static. A graph
is exported when it is missing, damaged, or anything in the manifest's key changed.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from semfuse_rt.errors import SemfuseError
from semfuse_rt.cache import atomic_write_bytes, cache_dir
from semfuse_rt.export.graphs.cam_graph import MAP_NAMES, build_cam_graph, io_names, weights_sha256
from semfuse_rt.export.graphs.manifest import (
    manifest_for, rebuild_reason, read_manifest, source_sha256, tool_versions,
                                       write_manifest)
from semfuse_rt.export.graphs.onnx_export import _export, _simplify
from semfuse_rt.export.graphs.opsets import DEFAULT_OPSET, check_opset
from semfuse_rt.cache import sha256_of

CLASSES_FILE = "cam_classes.onnx"


def graph_file(top_k: int | None) -> str:
    return CLASSES_FILE if top_k is None else f"cam_top{top_k}.onnx"


@dataclass
class ExportedCamGraph:
    directory: Path
    path: Path
    top_k: int | None
    io: dict
    manifest: dict
    built: bool  # False when an up-to-date file was reused


def graph_source_sha256() -> str:
    """Identifies the code that defines the graph: editing it invalidates old exports."""
    from semfuse_rt.export.graphs import cam_graph, onnx_export
    from semfuse_rt.export.networks import efficientnet_lite, normalisation, vgg19, vgg19_classifier

    return source_sha256(cam_graph, efficientnet_lite, normalisation, onnx_export, vgg19, vgg19_classifier,
                         sys.modules[__name__])


def checkpoint_sha256(classifier) -> str | None:
    """sha256 of the file the weights came from, where it is known (the manifest records it
    for people; the cache key is the digest of the weights themselves)."""
    recorded = getattr(classifier, "checkpoint_sha256", None)
    if recorded:
        return recorded
    if classifier.name == "efficientnet-lite0":
        from semfuse_rt.export.networks.efficientnet_lite import checkpoint_path

        return sha256_of(checkpoint_path())
    return None


def default_directory(classifier, digest: str, input_size: int, opset: int) -> Path:
    return cache_dir("engines") / f"cam-{classifier.name}-{digest[:12]}-{input_size}px-opset{opset}"


def _dynamic_axes(graph, top_k: int | None) -> dict:
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}, "class_weights": {0: "batch", 1: "k"}}
    axes.update({name: {0: "batch", 1: "k"} for name in MAP_NAMES})
    if top_k is None:
        axes["classes"] = {0: "batch", 1: "k"}
    else:
        # K is a constant of this graph; only the batch varies.
        axes = {name: {0: "batch"} for name in axes}
        axes["classes"] = {0: "batch"}
    return axes


def _io_description(graph, top_k: int | None) -> dict:
    size = graph.input_size
    k = "K" if top_k is None else top_k
    shapes = {"image": ["N", 3, size, size], "logits": ["N", 1000], "class_weights": ["N", k],
              "classes": ["N", k]}
    for name, layer in zip(MAP_NAMES, graph.layer_shapes):
        shapes[name] = ["N", k, layer.height, layer.width]
    names = io_names(top_k)
    dtypes = {"classes": "int64"}
    return {**names, "shapes": {n: shapes[n] for n in names["inputs"] + names["outputs"]},
            "dtypes": {n: dtypes.get(n, "float32") for n in names["inputs"] + names["outputs"]}}


def export_cam_graph(classifier, top_k: int | None = None, directory: Path | None = None, *,
                     opset: int = DEFAULT_OPSET, force: bool = False,
                     digest: str | None = None) -> ExportedCamGraph:
    """Export (or reuse) the CAM graph of `classifier` for `top_k` classes (None: the
    classes-input graph). `digest` is weights_sha256(classifier.model) if already known."""
    check_opset(opset)
    if top_k is not None and not 1 <= top_k <= 1000:
        raise SemfuseError(f"classes must be 1..1000, got {top_k}")
    digest = digest or weights_sha256(classifier.model)
    input_size = classifier.input_size
    directory = Path(directory) if directory else default_directory(classifier, digest, input_size, opset)
    directory.mkdir(parents=True, exist_ok=True)
    name = graph_file(top_k)
    key = {"graph_source_sha256": graph_source_sha256(), "classifier": classifier.name,
           "weights_sha256": digest, "input_size": input_size, "opset": opset,
           "cam_layers": list(classifier.cam_layers)}
    existing = read_manifest(directory)
    current = manifest_for(existing, key)
    reason = "asked to" if force else rebuild_reason(directory, existing, key, [name])
    if reason is None and current is not None:
        return ExportedCamGraph(directory, directory / name, top_k, current["io"][name], current, False)
    # A graph of another K not made yet is no rebuild; anything else says why.
    if reason is not None and not (current is not None and name not in current.get("files", {})):
        print(f"semfuse-rt: exporting the CAM graph {name} in {directory} again: {reason}", file=sys.stderr)

    graph = build_cam_graph(classifier, top_k)
    generator = torch.Generator().manual_seed(0)
    # Batch 2 while tracing, so no size-1 axis can be mistaken for a broadcast.
    image = torch.rand(2, 3, input_size, input_size, generator=generator) * 255
    args = (image,) if top_k is not None else (image, torch.tensor([[1, 2], [3, 4]]))
    io = _io_description(graph, top_k)
    with torch.no_grad():
        model = _export(graph, args, io, _dynamic_axes(graph, top_k), opset)
    model, simplified = _simplify(model)
    atomic_write_bytes(directory / name, model.SerializeToString())

    # Other graphs of the same key stay listed; a key change drops them (they are stale).
    files = dict(current.get("files", {})) if current is not None else {}
    io_all = dict(current.get("io", {})) if current is not None else {}
    simplified_all = dict(current.get("simplified", {})) if current is not None else {}
    files[name] = sha256_of(directory / name)
    io_all[name] = io
    simplified_all[name] = simplified
    manifest = dict(
        key,
        checkpoint_sha256=checkpoint_sha256(classifier),
        files=files,
        io=io_all,
        simplified=simplified_all,
        layer_shapes={layer: [s.channels, s.height, s.width]
                      for layer, s in zip(classifier.cam_layers, graph.layer_shapes)},
        shape_policy=(f"dynamic batch N; image (N,3,{input_size},{input_size}) float32 RGB 0..255; "
                      "classes (N,K) int64 with K dynamic in cam_classes.onnx, K fixed in cam_topK.onnx"),
        combination="in the runner: each cam map normalised to [0,1], upsampled bilinearly, averaged, "
                    "renormalised, weighted over classes by class_weights (engine/semantic/cam.py)",
        tools=tool_versions("torch", "onnx", "onnxslim", "onnxruntime"),
    )
    return ExportedCamGraph(directory, directory / name, top_k, io, write_manifest(directory, manifest), True)
