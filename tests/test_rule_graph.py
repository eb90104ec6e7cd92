"""Feature rules as graphs: each rule's torch form (kernels/rules/) against the numpy
reference on tie-prone inputs, and its exported ONNX Runtime graph against the torch form
on fresh random inputs."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import tie_prone_features
from semfuse_rt.export.graphs.rule_graph import export_rule_graph
from semfuse_rt.kernels.rules import feature_rule
from support.kernels import reference


def same(a: torch.Tensor, b: np.ndarray) -> bool:
    return np.array_equal(np.nan_to_num(a.numpy(), nan=7.0), np.nan_to_num(b, nan=7.0))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_torch_forms_follow_the_reference_tie_rules(rng, k):
    maps = tie_prone_features(rng, k, (3, 19, 23), np.float32)
    features = torch.from_numpy(np.stack(maps))
    fused, labels = reference.choose_max(maps)
    assert same(feature_rule("max").module()(features)[0], fused)
    for window in (1, 3, 5, 9):
        filtered = reference.majority_filter(labels, k, window)
        assert same(feature_rule("majority", window).module()(features)[0], reference.gather_by_label(maps, filtered))
    weights = rng.random((k, 19, 23)).astype(np.float32)
    weights[:, :4] = 0.5  # equal weights: ties of W |F| too
    expected = reference.cam_choose_max(maps, list(weights))[0]
    assert same(feature_rule("max").module()(features, torch.from_numpy(weights))[0], expected)


@pytest.mark.parametrize("rule, window, weighted", [("max", 5, False), ("max", 5, True), ("majority", 5, False),
                                                    ("majority", 3, True)])
def test_ort_graphs_match_the_torch_forms(tmp_path, rng, rule, window, weighted):
    path = export_rule_graph(feature_rule(rule, window), weighted, tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = feature_rule(rule, window).module()
    for k, c, h, w in [(2, 64, 37, 53), (3, 5, 8, 6), (4, 1, 1, 1)]:
        features = torch.from_numpy(rng.standard_normal((k, c, h, w)).astype(np.float32))
        feeds = {"features": features.numpy()}
        weights = None
        if weighted:
            weights = torch.from_numpy(rng.random((k, h, w)).astype(np.float32))
            feeds["weights"] = weights.numpy()
        got = session.run(["target"], feeds)[0]
        assert got.shape == (1, c, h, w) and np.array_equal(got, module(features, weights).numpy())
    assert export_rule_graph(feature_rule(rule, window), weighted, tmp_path) == path  # reused, not exported again
