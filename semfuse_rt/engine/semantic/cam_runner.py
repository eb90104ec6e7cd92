"""ONNX Runtime runner for the CAM graph (export/graphs/cam_graph.py, export/graphs/cam_export.py).

Called like engine/semantic/cam.py's GradCAM, and returning the same CAMResult, so `input_cams`
can use either:

    with OrtCamRunner(classifier) as cam:
        result = cam(pixels, classes=5, size=(H, W))   # or targets=(N, K) class indices

The graph yields logits, class weights and the raw per-layer maps at native resolution;
the combination into one map per image (normalise, upsample to H x W, average, weigh the
classes) is engine/semantic/cam.py's `combine_layer_maps`, the code the Torch path runs.
"""
from __future__ import annotations

import torch

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.graphs.cam_graph import MAP_NAMES, weights_sha256


class OrtCamRunner:
    name = "ort"

    def __init__(self, classifier, *, provider: str | None = None, threads: int | None = None,
                 engine_dir=None):
        self.classifier = classifier
        self.provider = provider
        self.threads = threads
        self.engine_dir = engine_dir
        self.sessions: dict[int | None, object] = {}
        self.digest: str | None = None
        self.active = False

    def __enter__(self) -> "OrtCamRunner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:
        from semfuse_rt.engine.backends.ort.loader import providers

        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise SemfuseError("the ort backend needs onnxruntime: pip install onnxruntime") from None
        self.provider = self.provider or providers()[0]
        # Hashing the weights once per runner, not per graph it loads.
        self.digest = weights_sha256(self.classifier.model)
        self.active = True

    def deactivate(self) -> None:
        self.sessions = {}
        self.active = False

    def session(self, top_k: int | None):
        """The session of the classes graph (None) or the top-K graph, exported on first use."""
        if not self.active:
            raise RuntimeError("OrtCamRunner used outside its `with` block")
        if top_k not in self.sessions:
            from semfuse_rt.engine.backends.ort.optimised_sessions import open_session
            from semfuse_rt.export.graphs.cam_export import export_cam_graph

            graph = export_cam_graph(self.classifier, top_k, self.engine_dir, digest=self.digest)

            def threads(options) -> None:
                if self.threads:
                    options.intra_op_num_threads = self.threads

            # The active provider (set by activate), then the CPU's for what it lacks.
            chosen = list(dict.fromkeys(p for p in (self.provider, "CPUExecutionProvider") if p is not None))
            self.sessions[top_k] = open_session(graph.path, "ORT_ENABLE_ALL", chosen, threads)
        return self.sessions[top_k]

    def __call__(self, pixels: torch.Tensor, classes: int = 1, size: tuple[int, int] | None = None,
                 targets: torch.Tensor | None = None):
        """Maps for the `classes` most probable classes of each image (or for the (N, K)
        class indices `targets`), combined and upsampled to `size` (default: the input's)."""
        from semfuse_rt.engine.semantic.cam_maps import CAMResult, combine_layer_maps, map_size

        side = self.classifier.input_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, side, side):
            raise SemfuseError(f"the CAM graph takes (N, 3, {side}, {side}) pixels, got {tuple(pixels.shape)}")
        image = pixels.detach().to("cpu", torch.float32).contiguous().numpy()
        if targets is None:
            if not 1 <= classes <= 1000:
                raise ValueError(f"classes must be 1..1000, got {classes}")
            logits, chosen, weights, *maps = self.session(classes).run(
                ["logits", "classes", "class_weights", *MAP_NAMES], {"image": image})
            chosen = torch.from_numpy(chosen)
        else:
            chosen = torch.as_tensor(targets, dtype=torch.long).reshape(image.shape[0], -1)
            if chosen.numel() and not bool(((chosen >= 0) & (chosen < 1000)).all()):
                raise ValueError("class indices must be 0..999")
            logits, weights, *maps = self.session(None).run(
                ["logits", "class_weights", *MAP_NAMES], {"image": image, "classes": chosen.contiguous().numpy()})
        layer_maps = [torch.from_numpy(m) for m in maps]
        weights = torch.from_numpy(weights)
        return CAMResult(combine_layer_maps(layer_maps, weights, map_size(pixels, size)), layer_maps,
                         torch.from_numpy(logits), chosen, weights)
