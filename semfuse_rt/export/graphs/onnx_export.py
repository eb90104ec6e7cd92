"""ONNX export of the features graph and the explicit loss-gradient graph.

An engine directory holds `features.onnx` (image -> F_l), `gradient.onnx`
((image, target) -> (loss, dL/dimage)) and a manifest. Batch, height and width are dynamic.
For a layer that is one convolution it also holds `gradient_rows.onnx`, the gradient of a
band of rows (gradient_graph.RowBandLossGradient), which the ONNX Runtime CPU loop runs.
"""
from __future__ import annotations

import io
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from semfuse_rt.cache import atomic_write_bytes, cache_dir, sha256_of
from semfuse_rt.export.graphs import gradient_graph
from semfuse_rt.export.networks import normalisation as normalisation_module
from semfuse_rt.export.networks import vgg19 as vgg19_module
from semfuse_rt.export.graphs.gradient_graph import (ExplicitLossGradient, NormalisedFeatures, RowBandLossGradient,
                                              pixel_space_convs, supports_row_bands)
from semfuse_rt.export.graphs.manifest import (read_manifest, rebuild_reason, source_sha256, tool_versions,
    write_manifest)
from semfuse_rt.export.graphs.opsets import DEFAULT_OPSET, check_opset
from semfuse_rt.export.networks.vgg19 import VGG19Features, check_layer, output_channels
from semfuse_rt.export.networks.weights import VGG19Weights

FEATURES_FILE = "features.onnx"
GRADIENT_FILE = "gradient.onnx"
FEATURES_IO = {"inputs": ["image"], "outputs": ["features"]}
GRADIENT_IO = {"inputs": ["image", "target"], "outputs": ["loss", "grad"]}
ROW_BAND_FILE = "gradient_rows.onnx"
ROW_BAND_IO = {"inputs": ["image_rows", "target_rows"], "outputs": ["loss", "grad_rows"]}


@dataclass
class ExportedGraphs:
    directory: Path
    features: Path
    gradient: Path
    manifest: dict
    built: bool  # False when an up-to-date directory was reused

    @property
    def row_bands(self) -> Path | None:
        """The row-band gradient graph, where the layer has one."""
        return self.directory / ROW_BAND_FILE if "row_bands" in self.manifest else None

    @property
    def row_band_padding(self) -> list[float]:
        """The pixel that a band's rows outside the image hold (it shifts to zero)."""
        return self.manifest["row_bands"]["padding_pixel"]


# Identifies the code that defines the graphs, so editing it invalidates old exports. Taken
# at import: a process that runs for hours must describe the code it loaded, not the file
# as it is on disk later.
GRAPH_SOURCE_SHA256 = source_sha256(gradient_graph, normalisation_module, vgg19_module, sys.modules[__name__])


def default_directory(weights: VGG19Weights, layer: str, opset: int) -> Path:
    # The code's hash is in the name so that two installed versions sharing one cache
    # (or a long-running process beside an upgraded one) never overwrite each other's graphs.
    return cache_dir("engines") / f"vgg19-{weights.sha256[:12]}-{layer}-opset{opset}-{GRAPH_SOURCE_SHA256[:10]}"


def _export(module: torch.nn.Module, args: tuple, names: dict, dynamic: dict, opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated; its graphs are what
        # TensorRT and ONNX Runtime take today, and its output is checked below.
        warnings.simplefilter("ignore")
        # torch types `f` as a path; the TorchScript exporter (dynamo=False) writes to a
        # binary stream too, which keeps the graph off the disk.
        torch.onnx.export(
            module, args, buffer, dynamo=False, opset_version=opset,  # type: ignore[arg-type]
            input_names=names["inputs"], output_names=names["outputs"], dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model, full_check=True)
    return model


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """onnxslim, kept only when it leaves fewer nodes and a valid model."""
    try:
        import onnxslim

        slim = onnxslim.slim(model)
        onnx.checker.check_model(slim, full_check=True)
    except Exception:  # onnxslim is an optimisation; the unsimplified graph is correct
        return model, False
    if len(slim.graph.node) < len(model.graph.node):
        return slim, True
    return model, False


def export_graphs(weights: VGG19Weights, layer: str, directory: Path | None = None, *,
                  opset: int = DEFAULT_OPSET, force: bool = False) -> ExportedGraphs:
    """Export (or reuse) the features and gradient graphs for `weights` cut at `layer`."""
    check_layer(layer)
    check_opset(opset)
    # Only a folder the user named is removed after a failed first export: the cache's
    # folder may be shared with a concurrent export, which writes each file atomically.
    created = _first_missing(Path(directory)) if directory else None
    directory = Path(directory) if directory else default_directory(weights, layer, opset)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return _export_into(directory, weights, layer, opset, force)
    except BaseException:
        if created is not None:  # a failed first export leaves no half-built folder behind
            shutil.rmtree(created, ignore_errors=True)
        raise


def _first_missing(directory: Path) -> Path | None:
    """The outermost folder that mkdir(parents=True) would create; None if it exists."""
    if directory.exists():
        return None
    while not directory.parent.exists():
        directory = directory.parent
    return directory


def _export_into(directory: Path, weights: VGG19Weights, layer: str, opset: int, force: bool) -> ExportedGraphs:
    key = {"graph_source_sha256": GRAPH_SOURCE_SHA256, "weights_sha256": weights.sha256, "layer": layer,
           "opset": opset, "normalisation": weights.normalisation.name}
    existing = read_manifest(directory)
    reason = "asked to" if force else rebuild_reason(directory, existing, key)
    if existing is not None and reason is None:
        return ExportedGraphs(directory, directory / FEATURES_FILE, directory / GRADIENT_FILE, existing, False)
    if reason is not None:
        print(f"semfuse-rt: exporting the ONNX graphs in {directory} again: {reason}", file=sys.stderr)

    features = VGG19Features(weights.convs, layer).eval()
    image = torch.rand(1, 3, 37, 53) * 255
    with torch.no_grad():
        target = features(weights.normalisation.apply(image))
    spatial = {0: "batch", 2: "height", 3: "width"}
    pooled = any(kind == "pool" for _, kind, _ in features.plan)
    # Before the first pool the features keep the image's size: one name for both, or
    # the exporter's shape inference renames the image's dimensions after the features'.
    feature_spatial = {0: "batch", 2: "feature_height", 3: "feature_width"} if pooled else spatial
    graphs = {
        FEATURES_FILE: _export(NormalisedFeatures(features, weights.normalisation).eval(), (image,),
                               FEATURES_IO, {"image": spatial, "features": feature_spatial}, opset),
        GRADIENT_FILE: _export(ExplicitLossGradient(features, weights.normalisation).eval(), (image, target),
                               GRADIENT_IO, {"image": spatial, "target": feature_spatial,
                                             "loss": {0: "batch"}, "grad": spatial}, opset),
    }
    io = {FEATURES_FILE: FEATURES_IO, GRADIENT_FILE: GRADIENT_IO}
    extra = {}
    if supports_row_bands(features):
        with_halo = {0: "batch", 2: "rows_with_halo", 3: "width"}
        graphs[ROW_BAND_FILE] = _export(
            RowBandLossGradient(features, weights.normalisation).eval(), (image, target[:, :, 1:-1]), ROW_BAND_IO,
            {"image_rows": with_halo, "target_rows": {0: "batch", 2: "rows", 3: "width"},
             "loss": {0: "batch"}, "grad_rows": with_halo}, opset)
        io[ROW_BAND_FILE] = ROW_BAND_IO
        padding = pixel_space_convs(features, weights.normalisation)[0].flatten().tolist()
        extra["row_bands"] = {"file": ROW_BAND_FILE, "halo_rows": 1, "padding_pixel": padding}
    simplified = {}
    files = {}
    for name, model in graphs.items():
        model, simplified[name] = _simplify(model)
        data = model.SerializeToString()
        atomic_write_bytes(directory / name, data)
        files[name] = sha256_of(directory / name)
    manifest = dict(
        key,
        weights_source=weights.source,
        files=files,
        simplified=simplified,
        feature_channels=output_channels(layer),
        io=io,
        **extra,
        shape_policy="dynamic batch, height and width; image (N,3,H,W) float32 RGB pixels 0..255",
        tools=tool_versions("torch", "onnx", "onnxslim", "onnxruntime"),
    )
    return ExportedGraphs(directory, directory / FEATURES_FILE, directory / GRADIENT_FILE,
                          write_manifest(directory, manifest), True)
