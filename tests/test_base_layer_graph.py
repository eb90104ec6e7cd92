"""The mean base layer as torch ops and as an ONNX graph, against OpenCV's Gaussian blur."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from support.base_layer_reference import with_mean_base
from semfuse_rt.export.graphs.base_layer_graph import MeanBaseLayer, export_base_layer_graph


@pytest.mark.parametrize("height, width, sigma", [(40, 52, 8.0), (5, 7, 8.0), (31, 17, 2.5), (4, 4, 4.0),
                                                  (64, 9, 0.7)])
def test_torch_and_ort_match_opencv(tmp_path, rng, height, width, sigma):
    fused = (rng.random((3, height, width)) * 255).astype(np.float32)
    pixels = (rng.random((3, 3, height, width)) * 255).astype(np.float32)
    want = with_mean_base(fused, pixels, sigma)
    got = MeanBaseLayer(sigma)(torch.from_numpy(fused)[None], torch.from_numpy(pixels))[0].numpy()
    session = ort.InferenceSession(str(export_base_layer_graph(sigma, tmp_path)), providers=["CPUExecutionProvider"])
    graph = session.run(["result"], {"fused": fused[None], "pixels": pixels})[0][0]
    assert np.abs(got - want).max() <= 1e-3 and np.abs(graph - want).max() <= 1e-3
