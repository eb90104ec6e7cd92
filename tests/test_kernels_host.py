"""The CUDA kernels' per-element code, built for the CPU with g++, against numpy.

The host library runs the very functions the GPU kernels call, inside the same grid-stride
loops (replayed for several emulated thread counts), so these tests check the kernels'
logic: the rules, their tie and NaN conventions, the clipped majority windows across tile
borders, the 16-byte pack path and the scalar tail. Fused maps and labels must match the
numpy reference exactly (the rules only select values); Adam must match the numpy
reference bit for bit and torch.optim.Adam within rtol 1e-5, atol 1e-6 after 25 steps
(torch's vectorised CPU lerp may fuse a multiply-add where the kernel rounds twice).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from conftest import tie_prone_features
from semfuse_rt.kernels import source
from semfuse_rt.kernels.adam_scalars import adam_scalars
from support.kernels import host, host_build, reference


def placed(array: np.ndarray, offset_bytes: int) -> np.ndarray:
    """A copy of `array` whose data starts `offset_bytes` past a 64-byte boundary, so a test
    chooses between the kernels' 16-byte pack path (offset 0) and their scalar path."""
    raw = np.empty(array.nbytes + 64 + offset_bytes, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset_bytes
    out = raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def bits(array: np.ndarray) -> np.ndarray:
    """Bit patterns, so that equal NaNs compare equal and -0.0 differs from +0.0."""
    return array.view(np.uint16 if array.dtype == np.float16 else np.uint32)


# -- conversions --------------------------------------------------------------------------


def test_half_to_float_matches_numpy_for_every_bit_pattern():
    patterns = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    ours = host.half_to_float(patterns)
    expected = patterns.view(np.float16).astype(np.float32)
    finite_or_inf = ~np.isnan(expected)
    assert np.array_equal(bits(ours)[finite_or_inf], bits(expected)[finite_or_inf])
    assert np.isnan(ours[~finite_or_inf]).all()


# -- choose-max ---------------------------------------------------------------------------

# (values of inputs k = 0, 1, 2 at one element, the label docs/method.md and our NaN rule give)
CHOOSE_MAX_CASES = [
    ((1.0, -1.0, 1.0), 0),  # |.| ties go to the lowest k, whatever the sign
    ((0.5, -2.0, 2.0), 1),
    ((-0.0, 0.0, 0.0), 0),
    ((np.nan, 1.0, 2.0), 2),  # NaN never wins against a number
    ((np.nan, 0.0, 0.0), 1),
    ((np.nan, np.nan, np.nan), 0),  # all NaN: a tie, lowest k
    ((1.0, -np.inf, 5.0), 1),
    ((np.inf, -np.inf, 1.0), 0),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_choose_max_hand_cases(dtype):
    columns = np.array([values for values, _ in CHOOSE_MAX_CASES], dtype=dtype).T
    features = [np.ascontiguousarray(c.reshape(1, 1, -1)) for c in columns]
    expected_labels = np.array([label for _, label in CHOOSE_MAX_CASES], np.int32).reshape(1, 1, -1)
    for fused, labels in (host.choose_max(features), reference.choose_max(features)):
        np.testing.assert_array_equal(labels, expected_labels)
        chosen = np.choose(expected_labels, features)
        assert np.array_equal(bits(fused), bits(chosen))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("threads", [1, 7])
@pytest.mark.parametrize("offset_elements", [0, 1])
def test_choose_max_matches_reference(rng, k, dtype, threads, offset_elements):
    shape = (2, 3, 13, 21)  # 1638 elements: packs plus a scalar tail
    offset = offset_elements * np.dtype(dtype).itemsize
    features = [placed(f, offset) for f in tie_prone_features(rng, k, shape, dtype)]
    out = (placed(np.zeros(shape, dtype), offset), placed(np.zeros(shape, np.int32), 4 * offset_elements))
    fused, labels = host.choose_max(features, threads=threads, out=out)
    expected_fused, expected_labels = reference.choose_max(features)
    np.testing.assert_array_equal(labels, expected_labels)
    assert np.array_equal(bits(fused), bits(expected_fused))
    assert set(np.unique(labels)) == set(range(k))


# -- CAM-weighted choose-max --------------------------------------------------------------


def test_cam_choose_max_hand_cases():
    # Per element: F_0, F_1, W_0, W_1 -> label
    cases = [
        (2.0, 1.0, 0.25, 1.0, 1),  # 0.5 < 1: the weight overturns choose-max
        (2.0, 1.0, 0.5, 1.0, 0),  # 1 == 1: tie, lowest k
        (-3.0, 1.0, 1.0, 1.0, 0),
        (np.inf, 1.0, 0.0, 0.5, 1),  # 0 * inf is NaN, which never wins
        (1.0, np.nan, 1.0, 1.0, 0),
    ]
    f0, f1, w0, w1, expected = (np.array(column) for column in zip(*cases, strict=True))
    features = [f.astype(np.float32).reshape(1, 1, 1, -1) for f in (f0, f1)]
    weights = [w.astype(np.float32).reshape(1, 1, -1) for w in (w0, w1)]
    for _, labels in (host.cam_choose_max(features, weights), reference.cam_choose_max(features, weights)):
        np.testing.assert_array_equal(labels.ravel(), expected.astype(np.int32))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("width", [8, 7])  # H*W = 40 keeps packs inside a plane; 35 does not
@pytest.mark.parametrize("threads", [1, 5])
def test_cam_choose_max_matches_reference(rng, k, dtype, width, threads):
    n, c, h = 2, 3, 5
    features = [placed(f, 0) for f in tie_prone_features(rng, k, (n, c, h, width), dtype)]
    weights = []
    for _ in range(k):
        w = rng.integers(0, 5, size=(n, h, width)).astype(np.float32) / np.float32(4)  # ties, zeros
        weights.append(w)
    fused, labels = host.cam_choose_max(features, weights, threads=threads)
    expected_fused, expected_labels = reference.cam_choose_max(features, weights)
    np.testing.assert_array_equal(labels, expected_labels)
    assert np.array_equal(bits(fused), bits(expected_fused))


def test_cam_weights_are_shared_by_channels_but_not_by_images(rng):
    # Input 1 wins wherever its weight is 1, input 0 elsewhere, in every channel of image n.
    n, c, h, w = 2, 4, 3, 5
    features = [np.ones((n, c, h, w), np.float32), np.ones((n, c, h, w), np.float32)]
    mask = rng.random((n, h, w)) < 0.5
    weights = [np.full((n, h, w), 0.5, np.float32), np.where(mask, 1.0, 0.0).astype(np.float32)]
    _, labels = host.cam_choose_max(features, weights)
    np.testing.assert_array_equal(labels, np.broadcast_to(mask[:, None], (n, c, h, w)).astype(np.int32))


# -- majority filter ----------------------------------------------------------------------


def test_majority_filter_hand_cases():
    # Window 3 on 3 x 3 images. Corners see 2 x 2, edges 2 x 3 (clipped, not padded).
    # (0, 1) and (1, 0) see three 1s and three 0s: the tie keeps the centre label 1.
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], np.int32)
    expected = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], np.int32)
    # Centre: four 1s, four 2s, one 0 (itself): the centre is not tied, so the lowest tied
    # label (1) wins. Elsewhere 2 leads.
    three = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]], np.int32)
    three_expected = np.array([[2, 2, 2], [2, 1, 2], [2, 2, 2]], np.int32)
    for filtered, k, want in ((labels, 2, expected), (three, 3, three_expected)):
        np.testing.assert_array_equal(host.majority_filter(filtered[None], k, 3)[0], want)
        np.testing.assert_array_equal(reference.majority_filter(filtered[None], k, 3), want[None])


def test_majority_filter_window_one_is_identity(rng):
    labels = rng.integers(0, 3, size=(2, 9, 40)).astype(np.int32)
    np.testing.assert_array_equal(host.majority_filter(labels, 3, 1), labels)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("window", [3, 5, 7])
@pytest.mark.parametrize("threads", [1, 37])
def test_majority_filter_matches_reference(rng, k, window, threads):
    # 19 x 45 planes: partial tiles on the right and bottom (tiles are 32 x 8), so windows
    # are clipped at all four borders and read halos across tile edges.
    labels = rng.integers(0, k, size=(2, 3, 19, 45)).astype(np.int32)
    filtered = host.majority_filter(labels, k, window, threads=threads)
    np.testing.assert_array_equal(filtered, reference.majority_filter(labels, k, window))


def test_majority_filter_ignores_labels_outside_range(rng):
    labels = rng.integers(-1, 4, size=(3, 11, 37)).astype(np.int32)  # -1 and 3 are not labels of K=3
    filtered = host.majority_filter(labels, 3, 5)
    np.testing.assert_array_equal(filtered, reference.majority_filter(labels, 3, 5))
    assert filtered.min() >= 0 and filtered.max() <= 2


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("k", [2, 3])
def test_majority_fuse_gathers_with_the_filtered_labels(rng, dtype, k):
    shape = (1, 4, 10, 33)
    features = tie_prone_features(rng, k, shape, dtype)
    _, labels = reference.choose_max(features)
    filtered, fused = host.majority_fuse(features, labels, 5, threads=3)
    expected_labels = reference.majority_filter(labels, k, 5)
    np.testing.assert_array_equal(filtered, expected_labels)
    assert np.array_equal(bits(fused), bits(reference.gather_by_label(features, expected_labels)))


# -- Adam ---------------------------------------------------------------------------------


def _adam_problem(rng, shape=(3, 17, 13)):  # 663 elements: packs of 4 plus a tail of 3
    x = rng.standard_normal(shape).astype(np.float32) * np.float32(50)
    grads = [
        rng.standard_normal(shape).astype(np.float32) * np.float32(10 ** rng.uniform(-3, 1))
        for _ in range(25)
    ]
    return x, grads


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("offset_elements", [0, 1])
def test_adam_matches_reference_exactly_and_torch_closely(rng, threads, offset_elements):
    lr = 0.7
    x0, grads = _adam_problem(rng)
    offset = 4 * offset_elements
    x, m, v = (placed(a, offset) for a in (x0, np.zeros_like(x0), np.zeros_like(x0)))
    rx, rm, rv = x0.copy(), np.zeros_like(x0), np.zeros_like(x0)
    tx = torch.from_numpy(x0.copy()).requires_grad_(True)
    optimiser = torch.optim.Adam([tx], lr=lr)
    for t, g in enumerate(grads, start=1):
        host.adam_update(x, placed(g, offset), m, v, t, lr, threads=threads)
        reference.adam_update(rx, g, rm, rv, t, lr)
        tx.grad = torch.from_numpy(g.copy())
        optimiser.step()
    assert np.array_equal(x, rx) and np.array_equal(m, rm) and np.array_equal(v, rv)
    state = optimiser.state[tx]
    np.testing.assert_allclose(x, tx.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m, state["exp_avg"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v, state["exp_avg_sq"].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.array_equal(x, x0)


def test_adam_device_step_counter_gives_the_host_scalar_steps(rng):
    lr = 0.05
    x0, grads = _adam_problem(rng)
    x, m, v = x0.copy(), np.zeros_like(x0), np.zeros_like(x0)
    dx, dm, dv = x0.copy(), np.zeros_like(x0), np.zeros_like(x0)
    step = np.zeros(1, np.int32)
    for t, g in enumerate(grads, start=1):
        host.adam_update(x, g, m, v, t, lr)
        step[0] += 1  # what semfuse_adam_advance_step does on the device
        host.adam_update_device_step(dx, g, dm, dv, step, lr, threads=2)
    assert np.array_equal(x, dx) and np.array_equal(m, dm) and np.array_equal(v, dv)


@pytest.mark.parametrize("lr", [1e-3, 0.05, 1.0, 3.0])
def test_kernel_adam_scalars_equal_the_host_formula(lr):
    for t in [1, 2, 3, 10, 100, 1000, 10000]:
        ours = host.kernel_adam_scalars(t, lr)
        theirs = adam_scalars(t, lr)
        for field, _ in ours._fields_:
            assert getattr(ours, field) == getattr(theirs, field), (t, field)


# -- arguments and the build --------------------------------------------------------------


def test_launchers_reject_bad_arguments():
    one = [np.zeros((1, 2, 2), np.float32)]
    with pytest.raises(ValueError, match="2..8 inputs"):
        host.choose_max(one)
    with pytest.raises(ValueError, match="2..8 inputs"):
        host.choose_max(one * (source.MAX_INPUTS + 1))
    with pytest.raises(ValueError, match="float32 or float16"):
        host.choose_max([np.zeros(3, np.float64)] * 2)
    with pytest.raises(ValueError, match="odd"):
        host.majority_filter(np.zeros((2, 2), np.int32), 2, 4)
    with pytest.raises(ValueError, match="odd"):
        host.majority_filter(np.zeros((2, 2), np.int32), 2, source.MAX_WINDOW + 2)


def test_host_library_is_rebuilt_only_when_the_source_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path))
    first = host_build.build_host_library()
    built_at = first.stat().st_mtime_ns
    assert host_build.build_host_library() == first
    assert first.stat().st_mtime_ns == built_at
    edited = source.kernel_sources()
    edited[source.KERNEL_FILE] += '\nextern "C" int semfuse_host_edit_marker() { return 7; }\n'
    monkeypatch.setattr(host_build, "kernel_sources", lambda: edited)
    second = host_build.build_host_library()
    assert second != first
    assert ctypes.CDLL(str(second)).semfuse_host_edit_marker() == 7  # built from the hashed text
    assert sorted(p.name for p in second.parent.iterdir()) == sorted([first.name, second.name])
