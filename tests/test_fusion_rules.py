"""The fusion rules of docs/method.md on small arrays worked out by hand."""
import numpy as np
import pytest
import torch

from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.rules import fuse_features
from semfuse_rt.kernels.rules.choose_max import ChooseMax
from semfuse_rt.kernels.torch_rules import cam_choose_max, choose_max, majority_filter


def labels_of(features, weights=None):
    fused, labels = choose_max(list(features)) if weights is None else cam_choose_max(list(features), list(weights))
    return fused, labels.long()


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def test_choose_max_compares_magnitudes_and_ties_go_to_lowest_k():
    # K=3 inputs, C=1, 2x2 pixels.
    features = t([
        [[[1.0, -5.0], [2.0, 0.0]]],
        [[[-3.0, 5.0], [2.0, 0.0]]],
        [[[2.0, 1.0], [-2.0, 0.0]]],
    ])
    fused, labels = labels_of(features)
    assert labels.tolist() == [[[1, 0], [0, 0]]]
    assert fused.tolist() == [[[-3.0, -5.0], [2.0, 0.0]]]


def test_choose_max_is_per_channel():
    features = t([[[[1.0]], [[9.0]]], [[[4.0]], [[2.0]]]])  # K=2, C=2, 1x1
    assert labels_of(features)[1].flatten().tolist() == [1, 0]


def test_cam_weighted_choose_max_scales_magnitudes_per_pixel():
    features = t([[[[4.0, 4.0]]], [[[3.0, 3.0]]]])  # K=2, C=1, 1x2
    weights = t([[[0.2, 0.9]], [[0.8, 0.1]]])  # (K, H, W)
    assert labels_of(features, weights)[1].tolist() == [[[1, 0]]]


def test_majority_window_3_interior_and_clipped_borders():
    labels = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    # (1,1): six 0s against three 1s -> 0.
    # Corner (0,0): the clipped window {1,0;0,1} ties 2-2 and the centre's 1 is tied -> 1.
    # Corner (0,2): {0,0;1,0} -> 0. Edge (0,1): {1,0,0;0,1,0} -> 0.
    assert majority_filter(labels, 2, 3).tolist() == [[[1, 0, 0], [0, 0, 0], [0, 0, 1]]]


def test_majority_ties_keep_a_tied_centre_else_the_lowest_label():
    all_tied = torch.tensor([[[1, 1, 0], [0, 2, 0], [1, 2, 2]]])
    # (1,1): 0, 1 and 2 have three votes each; the centre's 2 is tied -> 2.
    assert majority_filter(all_tied, 3, 3)[0, 1, 1].item() == 2
    centre_out = torch.tensor([[[1, 1, 0], [0, 2, 0], [1, 1, 0]]])
    # (1,1): 0 and 1 have four votes, the centre's 2 only one -> lowest tied label, 0.
    assert majority_filter(centre_out, 3, 3)[0, 1, 1].item() == 0
    row = torch.tensor([[[0, 1, 2, 2, 1, 0]]])
    # Window 5 at x=0 sees {0,1,2}: a three-way tie, centre 0 -> 0; at x=2 it sees
    # {0,1,2,2,1}: 1 and 2 tie, centre 2 -> 2; at x=1, {0,1,2,2}: 2 wins outright.
    assert majority_filter(row, 3, 5).tolist() == [[[0, 2, 2, 2, 2, 0]]]


def test_majority_agrees_with_a_brute_force_count(rng):
    labels = torch.from_numpy(rng.integers(0, 3, size=(2, 9, 11)))
    window = 5
    out = majority_filter(labels, 3, window).numpy()
    lab = labels.numpy()
    r = window // 2
    for c in range(2):
        for y in range(9):
            for x in range(11):
                patch = lab[c, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
                counts = np.bincount(patch.ravel(), minlength=3)
                tied = np.flatnonzero(counts == counts.max())
                want = lab[c, y, x] if lab[c, y, x] in tied else tied[0]
                assert out[c, y, x] == want, (c, y, x)


def test_majority_rejects_even_windows_and_unknown_rules():
    features = torch.zeros(2, 1, 3, 3)
    with pytest.raises(SemfuseError, match="odd"):
        fuse_features(features, "majority", window=4)
    with pytest.raises(SemfuseError, match="unknown fusion rule"):
        fuse_features(features, "mean")


def test_fuse_features_majority_uses_filtered_labels():
    features = t([[[[5.0, 5.0, 1.0]]], [[[1.0, 1.0, 6.0]]]])  # K=2, C=1, 1x3
    # choose-max labels [0,0,1]; window 3 at x=2: {0,1} tie with centre 1 -> stays 1
    assert fuse_features(features, "max").tolist() == [[[5.0, 5.0, 6.0]]]
    assert fuse_features(features, "majority", window=3).tolist() == [[[5.0, 5.0, 6.0]]]
    features = t([[[[5.0, 1.0, 5.0]]], [[[1.0, 6.0, 1.0]]]])
    # labels [0,1,0]; x=1 window {0,1,0} -> 0: the fused value is input 0's 1.0
    assert fuse_features(features, "majority", window=3).tolist() == [[[5.0, 1.0, 5.0]]]


def test_running_reduction_equals_the_rule_over_all_inputs(rng):
    """reduce_into, input after input, gives choose-max over the stack: ties to the lowest k
    (exact repeats across inputs), NaN never winning, and row bands that do not divide H."""
    maps = torch.from_numpy(rng.standard_normal((4, 3, 37, 29)).astype(np.float32))
    maps[1, :, :5] = maps[0, :, :5]  # ties between inputs 0 and 1
    maps[2, :, 7:9] = -maps[0, :, 7:9]  # ties of magnitude, opposite sign
    maps[0, 1, 10, :] = float("nan")
    maps[3, 2, 11, 3] = float("nan")
    rule = ChooseMax()
    target = maps[0:1].clone()
    for k in range(1, 4):
        rule.reduce_into(target, maps[k:k + 1], band=200)  # 2 rows a band
    assert torch.equal(target[0], rule.fuse(maps))


def test_running_reduction_of_relu_maps_is_their_fmax(rng):
    """Never-negative maps (a ReLU layer's): the one-pass rule gives the rule's values, ties
    and NaN included (NaN is where no input has a value, so it stays NaN in both)."""
    maps = torch.relu(torch.from_numpy(rng.standard_normal((4, 3, 37, 29)).astype(np.float32)))
    maps[1, :, :5] = maps[0, :, :5]
    maps[0, 1, 10, :] = float("nan")
    maps[3, 2, 11, 3] = float("nan")
    maps[:, 0, 12, 4] = float("nan")
    rule = ChooseMax()
    expected = rule.fuse(maps)
    target = maps[0:1].clone()
    for k in range(1, 4):
        rule.reduce_into(target, maps[k:k + 1], nonnegative=True)
    assert torch.equal(target[0].nan_to_num(-1), expected.nan_to_num(-1))
    assert not torch.isnan(target[0, 1, 10]).any() and torch.isnan(target[0, 0, 12, 4])


def test_only_relu_and_pool_layers_count_as_never_negative():
    from semfuse_rt.export.networks.vgg19 import LAYER_NAMES, is_nonnegative

    assert [name for name in LAYER_NAMES if not is_nonnegative(name)] == [
        name for name in LAYER_NAMES if name.startswith("conv")]
    assert is_nonnegative("relu1_1") and is_nonnegative("pool2") and not is_nonnegative("conv1_1")
