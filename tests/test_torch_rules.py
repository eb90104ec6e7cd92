"""The Torch-op versions of the kernels' rules against the numpy reference and torch.optim.Adam.

They run on every torch device present (CPU always; CUDA when there is one). Fused maps and
labels must match exactly: the rules only select values. Adam on the CPU must equal
torch.optim.Adam bit for bit (same op sequence); on CUDA torch.optim.Adam takes its foreach
path, so there the tolerance is rtol 1e-5, atol 1e-6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import tie_prone_features
from semfuse_rt.kernels.adam_scalars import AdamSchedule
from semfuse_rt.kernels.torch_rules import adam_update
from semfuse_rt.kernels import torch_rules
from support.kernels import reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def on(device: str, arrays):
    return [torch.from_numpy(a).to(device) for a in arrays]


def same_bits(tensor: torch.Tensor, array: np.ndarray) -> bool:
    view = np.uint16 if array.dtype == np.float16 else np.uint32
    return np.array_equal(tensor.cpu().numpy().view(view), array.view(view))


@pytest.mark.parametrize("device", DEVICES)
def test_choose_max_hand_cases(device):
    # Inputs 0, 1, 2 at each element -> label (ties lowest k; NaN never wins a comparison)
    f0 = [1.0, 0.5, np.nan, np.nan, -0.0, np.inf]
    f1 = [-1.0, -2.0, 1.0, np.nan, 0.0, -np.inf]
    f2 = [1.0, 2.0, 2.0, np.nan, 0.0, 1.0]
    expected = [0, 1, 2, 0, 0, 0]
    features = on(device, [np.array(f, np.float32) for f in (f0, f1, f2)])
    _, labels = torch_rules.choose_max(features)
    assert labels.dtype == torch.int32
    assert labels.cpu().tolist() == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_choose_max_matches_reference(rng, device, k, dtype):
    features = tie_prone_features(rng, k, (2, 3, 13, 21), dtype)
    fused, labels = torch_rules.choose_max(on(device, features))
    expected_fused, expected_labels = reference.choose_max(features)
    np.testing.assert_array_equal(labels.cpu().numpy(), expected_labels)
    assert same_bits(fused, expected_fused)


@pytest.mark.parametrize("device", DEVICES)
def test_choose_max_accepts_a_stacked_tensor(rng, device):
    features = tie_prone_features(rng, 3, (4, 6, 7), np.float32)
    stacked = torch.from_numpy(np.stack(features)).to(device)
    _, labels = torch_rules.choose_max(stacked)
    np.testing.assert_array_equal(labels.cpu().numpy(), reference.choose_max(features)[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cam_choose_max_matches_reference(rng, device, k, dtype):
    n, c, h, w = 2, 3, 5, 7
    features = tie_prone_features(rng, k, (n, c, h, w), dtype)
    weights = [rng.integers(0, 5, size=(n, h, w)).astype(np.float32) / np.float32(4) for _ in range(k)]
    fused, labels = torch_rules.cam_choose_max(on(device, features), on(device, weights))
    expected_fused, expected_labels = reference.cam_choose_max(features, weights)
    np.testing.assert_array_equal(labels.cpu().numpy(), expected_labels)
    assert same_bits(fused, expected_fused)


@pytest.mark.parametrize("device", DEVICES)
def test_majority_filter_hand_cases(device):
    # Clipped corners/edges and the centre-keeps-its-tie rule (K = 2), and the lowest-tied
    # rule when the centre is not tied (K = 3, centre of the second image).
    two = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], np.int32)
    three = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]], np.int32)
    cases = [(two, 2, two.copy()), (three, 3, np.array([[2, 2, 2], [2, 1, 2], [2, 2, 2]], np.int32))]
    for labels, k, expected in cases:
        filtered = torch_rules.majority_filter(torch.from_numpy(labels).to(device)[None], k, 3)
        np.testing.assert_array_equal(filtered[0].cpu().numpy(), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("window", [1, 3, 5, 7])
def test_majority_filter_matches_reference(rng, device, k, window):
    labels = rng.integers(0, k, size=(2, 3, 19, 45)).astype(np.int32)
    labels[0, 0, :2, :3] = -1  # not a label: must not vote, and is replaced
    filtered = torch_rules.majority_filter(torch.from_numpy(labels).to(device), k, window)
    assert filtered.dtype == torch.int32
    np.testing.assert_array_equal(filtered.cpu().numpy(), reference.majority_filter(labels, k, window))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_majority_fuse_gathers_with_the_filtered_labels(rng, device, dtype):
    features = tie_prone_features(rng, 3, (1, 4, 10, 33), dtype)
    _, labels = reference.choose_max(features)
    filtered, fused = torch_rules.majority_fuse(on(device, features), torch.from_numpy(labels).to(device), 5)
    expected = reference.majority_filter(labels, 3, 5)
    np.testing.assert_array_equal(filtered.cpu().numpy(), expected)
    assert same_bits(fused, reference.gather_by_label(features, expected))


@pytest.mark.parametrize("device", DEVICES)
def test_adam_update_is_torch_optim_adam(rng, device):
    lr = 0.7
    x0 = torch.from_numpy(rng.standard_normal((3, 17, 13)).astype(np.float32) * 50).to(device)
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    scratch = torch.empty_like(x0)
    param = x0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([param], lr=lr)
    for t in range(1, 26):
        g = torch.from_numpy(rng.standard_normal((3, 17, 13)).astype(np.float32) * 10 ** rng.uniform(-3, 1))
        g = g.to(device)
        adam_update(x, m, v, g, t, AdamSchedule(steps=25, lr=lr), scratch)
        param.grad = g.clone()
        optimiser.step()
    state = optimiser.state[param]
    pairs = [(x, param.detach()), (m, state["exp_avg"]), (v, state["exp_avg_sq"])]
    for ours, theirs in pairs:
        if device == "cpu":
            assert torch.equal(ours, theirs)
        else:
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not torch.equal(x, x0)


def test_cosine_decay_is_torch_adam_with_cosine_annealing(rng):
    """The annealed schedule is torch.optim.Adam under a cosine LambdaLR, bit for bit."""
    steps, lr = 12, 0.3
    x0 = torch.from_numpy(rng.standard_normal((2, 9, 7)).astype(np.float32) * 50)
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    schedule = AdamSchedule(steps=steps, lr=lr, decay="cosine")
    param = x0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([param], lr=lr)
    annealing = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / steps)))
    for t in range(1, steps + 1):
        g = torch.from_numpy(rng.standard_normal((2, 9, 7)).astype(np.float32))
        adam_update(x, m, v, g, t, schedule)
        param.grad = g.clone()
        optimiser.step()
        annealing.step()
    assert torch.equal(x, param.detach())
    assert schedule.lr_at(1) == lr and schedule.lr_at(steps) < 0.02 * lr


def test_rules_reject_bad_arguments():
    with pytest.raises(ValueError, match="2..8 inputs"):
        torch_rules.choose_max([torch.zeros(3)])
    with pytest.raises(ValueError, match="odd"):
        torch_rules.majority_filter(torch.zeros((4, 4), dtype=torch.int32), 2, 2)
