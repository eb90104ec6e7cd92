"""`semfuse-rt bench --graph FILE.onnx`: a graph from `semfuse-rt export` run by ONNX Runtime on
the CPU, file to file, timed beside this package's own fuse of the preset and options that
its manifest records, on the same files in the same run: pipeline_benchmark's run, with the
graph where the DT-CWT baseline would be. Before the timing both fuse the files once, and
their images must agree as closely as the export's tests require."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semfuse_rt.engine.deploy.graph_manifest import read_manifest
from semfuse_rt.engine.deploy.whole_fuse_export import describe
from semfuse_rt.engine.deploy.whole_fuse_graph import INPUT, OUTPUTS
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.io.images import describe_size, load_image, save_image
from semfuse_rt.engine.benchmarking.pipeline_benchmark import TOTAL, PipelineReport, run_pipeline_benchmark
from semfuse_rt.engine.io.synthetic import SYNTHETIC_SIDE
from semfuse_rt.errors import SemfuseError

GRAPH_NAME = "exported graph (onnxruntime CPU)"
# What tests/test_whole_fuse_export.py allows between the graph and `semfuse-rt fuse`: within
# 2 grey levels, and within 1 but for one value in 10^4 (the blend start's OpenCV filters
# round differently from the graph's torch ops).
TOLERANCE_LEVELS = 2
TOLERANCE_SHARE = 1e-4
def agreement(expected: np.ndarray, got: np.ndarray, checked: bool = True) -> dict:
    """How far apart two images are; the tolerance they are held to, None where they are not
    (a float16 graph, whose own error against float32 its manifest gives)."""
    difference = np.abs(expected.astype(np.int32) - got.astype(np.int32))
    return {"max_levels": int(difference.max()), "share_over_one": float((difference > 1).mean()),
            "tolerance_levels": TOLERANCE_LEVELS if checked else None,
            "tolerance_share": TOLERANCE_SHARE if checked else None}


class GraphBench:
    """The graph, in an ONNX Runtime session on the CPU, and the Fuser options that make the
    package's fuse the one the graph was exported from."""

    def __init__(self, path: Path, weights: Path | None = None, backend: str | None = None,
                 show_progress: bool = True):
        import onnxruntime

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        manifest = self.manifest
        self.method = manifest["method"]
        self.options: dict[str, Any] = {"preset": manifest["preset"], **manifest["options"]}
        if backend is not None:
            self.options["backend"] = backend
        if manifest["weights_sha256"] is None:
            if weights is not None:
                raise SemfuseError(f"--weights does not apply: {self.path} ({describe(manifest)}) holds no network")
        else:
            from semfuse_rt.export.networks.weights import load_vgg19

            vgg = load_vgg19(weights, show_progress=show_progress)
            if vgg.sha256 != manifest["weights_sha256"]:
                source = f"weights {weights}" if weights is not None else "the default weights"
                raise SemfuseError(f"--graph {self.path} was exported with the weights of sha256 "
                                   f"{manifest['weights_sha256'][:12]}... ({manifest.get('weights_source')}), not "
                                   f"{source} ({vgg.sha256[:12]}...); give those with --weights")
            self.options["weights"] = vgg
        Fuser(self.method, show_progress=False, **self.options)  # the options (--backend too), checked before any work
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types are not public API
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SemfuseError(f"--graph {self.path}: ONNX Runtime cannot load it ({reason})") from None

    def synthetic_side(self) -> int:
        """The synthetic pair's side: 520, or the nearest the graph takes."""
        if self.manifest["images"] != 2:
            raise SemfuseError(f"--graph {self.path} fuses {self.manifest['images']} images; give that many input "
                               "images (the synthetic input is a pair)")
        low, high = self.manifest["shorter_side"]
        return max(low, min(SYNTHETIC_SIDE, high if high is not None else SYNTHETIC_SIDE))

    def check_images(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> None:
        """The inputs are a set the graph fuses as `semfuse-rt fuse` would."""
        count = self.manifest["images"]
        if len(images) != count:
            raise SemfuseError(f"--graph {self.path} fuses {count} images; got {len(images)}")
        for image, path in zip(images, paths):
            if image.dtype != np.uint8:
                raise SemfuseError(f"{path}: {image.dtype.itemsize * 8}-bit samples; the exported graph takes "
                                   "8-bit images")
        if len({image.shape[:2] for image in images}) != 1:
            raise SemfuseError("the inputs differ in size: " + ", ".join(describe_size(i) for i in images) +
                               "; fusion needs registered images of one size")
        grey = {image.ndim == 2 for image in images}
        if len(grey) != 1:
            raise SemfuseError("grey and colour inputs mixed: the exported graph fuses all-grey or all-colour "
                               "sets (semfuse-rt fuse keeps the colour inputs' chroma, the graph does not); "
                               "give images all grey or all colour")
        low, high = self.manifest["shorter_side"]
        shorter = min(images[0].shape[:2])
        if shorter < low or (high is not None and shorter > high):
            sides = f"{low} to {high}" if high is not None else f"{low} or more"
            raise SemfuseError(f"--graph {self.path} takes images whose shorter side is {sides} pixels; these have "
                               f"{shorter} (export one for them with semfuse-rt export --size)")

    def fuse(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Colour sets give `fused`, grey ones `fused_luma`, as examples/deploy/fuse_onnx.py does."""
        grey = all(image.ndim == 2 for image in images)
        stack = np.stack([np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image for image in images])
        return self.session.run([OUTPUTS[1] if grey else OUTPUTS[0]], {INPUT: stack})[0]

    def fuse_files(self, paths: Sequence[Path], out: Path) -> float:
        """Seconds to read, fuse and write, as the package's fuse is timed."""
        started = time.perf_counter()
        save_image(out, self.fuse([load_image(path) for path in paths]))
        return time.perf_counter() - started

    def compare(self, paths: Sequence[Path]) -> dict:
        """Both fuse `paths` once (after checking them): their agreement, or an error where it
        is outside the export's tolerance."""
        images = [load_image(path) for path in paths]
        self.check_images(images, paths)
        with Fuser(self.method, show_progress=False, **self.options) as fuser:
            expected = fuser(images).image
        found = agreement(expected, self.fuse(images), checked=self.manifest.get("precision") != "fp16")
        if found["tolerance_levels"] is not None and (found["max_levels"] > TOLERANCE_LEVELS
                                                      or found["share_over_one"] > TOLERANCE_SHARE):
            raise SemfuseError(f"--graph {self.path}: its image differs from this package's fuse of "
                               f"{describe(self.manifest)} by up to {found['max_levels']} grey levels "
                               f"({found['share_over_one']:.3%} of values by more than 1; the export's tolerance: "
                               f"{TOLERANCE_LEVELS}, {TOLERANCE_SHARE:.2%}); this package's code or weights have "
                               "changed since the export: export the graph again")
        return found

    def run(self, paths: Sequence[Path], runs: int, warmup: int, on_run=None) -> PipelineReport:
        """`compare`, then pipeline_benchmark's timing with the graph beside the package's fuse."""
        found = self.compare(paths)
        report = run_pipeline_benchmark(paths, self.method, runs, warmup, on_run=on_run, beside=self.fuse_files,
                                        beside_name=GRAPH_NAME, **self.options)
        report.agreement = found
        return report


def summary_line(report: PipelineReport) -> str:
    """The ratio and the agreement, for the terminal (bench.md has them too)."""
    summary = report.summary()
    ratio = summary[TOTAL]["p50"] / summary[report.baseline_name]["p50"]
    tolerance = report.agreement["tolerance_levels"]
    held = f"tolerance {tolerance}" if tolerance is not None else "a float16 graph, not held to float32's tolerance"
    return (f"end to end p50, fuse / {report.baseline_name}: {ratio:.2f}x; images at most "
            f"{report.agreement['max_levels']} grey levels apart ({held})")
