"""Feature rules as graphs: the torch modules against the kernels' torch twins on tie-prone
inputs, and their ONNX Runtime graphs against the modules on fresh random inputs."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import tie_prone_features
from semfuse_rt.export.graphs.rule_graph import ChooseMaxGraph, MajorityGraph, export_rule_graph
from semfuse_rt.kernels import torch_rules


def same(a, b):
    return torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_modules_follow_the_twins_tie_rules(rng, k):
    features = torch.from_numpy(np.stack(tie_prone_features(rng, k, (3, 19, 23), np.float32)))
    fused, labels = torch_rules.choose_max(list(features))
    assert same(ChooseMaxGraph()(features)[0], fused)
    for window in (1, 3, 5, 9):
        assert same(MajorityGraph(window)(features)[0], torch_rules.majority_fuse(list(features), labels, window)[1])
    weights = torch.from_numpy(rng.random((k, 19, 23)).astype(np.float32))
    weights[:, :4] = 0.5  # equal weights: ties of W |F| too
    assert same(ChooseMaxGraph()(features, weights)[0], torch_rules.cam_choose_max(list(features), list(weights))[0])


@pytest.mark.parametrize("rule, window, weighted", [("max", 5, False), ("max", 5, True), ("majority", 5, False),
                                                    ("majority", 3, True)])
def test_ort_graphs_match_the_modules(tmp_path, rng, rule, window, weighted):
    path = export_rule_graph(rule, window, weighted, tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = MajorityGraph(window) if rule == "majority" else ChooseMaxGraph()
    for k, c, h, w in [(2, 64, 37, 53), (3, 5, 8, 6), (4, 1, 1, 1)]:
        features = torch.from_numpy(rng.standard_normal((k, c, h, w)).astype(np.float32))
        feeds = {"features": features.numpy()}
        weights = None
        if weighted:
            weights = torch.from_numpy(rng.random((k, h, w)).astype(np.float32))
            feeds["weights"] = weights.numpy()
        got = session.run(["target"], feeds)[0]
        assert got.shape == (1, c, h, w) and np.array_equal(got, module(features, weights).numpy())
    assert export_rule_graph(rule, window, weighted, tmp_path) == path  # reused, not exported again
