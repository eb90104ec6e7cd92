"""Behaviour is unchanged across restructures (issue 29): `fuse`, `fuse-batch` and
`fuse-video` on the shared sets give the bytes recorded in data/same_bytes.json, which were
written by this file at the commit before engine/ was split into sub-packages.

Every fused pixel is hashed, not the files: a PNG's bytes also depend on the zlib build. The
runs cover every start (blend, whole-image blend, DT-CWT with verification, the inputs' mean),
optimisation steps on the default backend, the majority rule, the base layer, K = 3, colour,
16-bit, batches and warm-started video. Steps use the seeded weights, so no download is needed.

To record new digests after a change that is meant to change results:
`SEMFUSE_RT_RECORD_BYTES=1 python -m pytest tests/test_same_bytes.py`; say why in the commit."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATASETS, dataset, run_main

DIGESTS = Path(__file__).resolve().parent / "data" / "same_bytes.json"
RECORD = os.environ.get("SEMFUSE_RT_RECORD_BYTES") == "1"

# name: (dataset files, fuse options); the files are relative to the shared datasets.
FUSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "infrared-blend": (("infrared_visible/Camp_IR.png", "infrared_visible/Camp_Vis.png"), ()),
    "medical-blend": (("medical/c01_1.tif", "medical/c01_2.tif"), ()),
    "multifocus-blend": (("multifocus/lytro-01-A.jpg", "multifocus/lytro-01-B.jpg"), ()),
    "triple-blend": (("multifocus_triple/lytro-01-A.jpg", "multifocus_triple/lytro-01-B.jpg",
                      "multifocus_triple/lytro-01-C.jpg"), ()),
    "infrared-fast": (("infrared_visible/Camp_IR.png", "infrared_visible/Camp_Vis.png"), ("--preset", "fast")),
    "medical-majority": (("medical/c01_1.tif", "medical/c01_2.tif"), ("-m", "majority", "--steps", "3")),
    "multifocus-paper": (("multifocus/lytro-01-A.jpg", "multifocus/lytro-01-B.jpg"),
                         ("--preset", "paper", "--steps", "3")),
}


def _exposure_set() -> tuple[str, ...]:
    folder = dataset("multiexposure", "chair")
    return tuple(str(path.relative_to(DATASETS)) for path in sorted(folder.iterdir()))


def pixels_digest(path: Path) -> str:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return hashlib.sha256(f"{image.shape} {image.dtype}".encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def _check(name: str, digests: dict[str, str]) -> None:
    recorded = json.loads(DIGESTS.read_text()) if DIGESTS.is_file() else {}
    if RECORD:
        recorded[name] = digests
        DIGESTS.parent.mkdir(exist_ok=True)
        DIGESTS.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    assert name in recorded, f"no digests recorded for {name}"
    changed = sorted(key for key in recorded[name].keys() | digests.keys()
                     if recorded[name].get(key) != digests.get(key))
    assert not changed, f"{name}: other pixels than recorded for {changed}"


def _fuse(monkeypatch, capsys, tmp_path, files, options, weights_file) -> str:
    output = tmp_path / "fused.png"
    weights = ("--weights", str(weights_file)) if "--steps" in options or "--preset" in options else ()
    code, _, err = run_main(monkeypatch, capsys, "fuse", *(dataset(file) for file in files),
                            "-o", output, "-q", *options, *weights)
    assert code == 0, err
    return pixels_digest(output)


@pytest.mark.slow
def test_fuse_gives_the_recorded_pixels(monkeypatch, capsys, tmp_path, weights_file):
    digests = {name: _fuse(monkeypatch, capsys, tmp_path, files, options, weights_file)
               for name, (files, options) in FUSES.items()}
    digests["exposure"] = _fuse(monkeypatch, capsys, tmp_path, _exposure_set(), ("--preset", "exposure"),
                                weights_file)
    _check("fuse", digests)


@pytest.mark.slow
def test_fuse_batch_gives_the_recorded_pixels(monkeypatch, capsys, tmp_path):
    output = tmp_path / "out"
    code, _, err = run_main(monkeypatch, capsys, "fuse-batch", dataset(), "-o", output, "-q", "--workers", "2")
    assert code == 0, err
    _check("fuse-batch", {str(path.relative_to(output)): pixels_digest(path)
                          for path in sorted(output.rglob("*.png"))})


@pytest.mark.slow
def test_fuse_video_gives_the_recorded_pixels(monkeypatch, capsys, tmp_path, weights_file):
    scenes = [cv2.imread(str(dataset("infrared_visible", name)), cv2.IMREAD_GRAYSCALE)
              for name in ("Camp_IR.png", "Camp_Vis.png")]
    streams = []
    for index, scene in enumerate(scenes):
        folder = tmp_path / f"stream{index}"
        folder.mkdir()
        for t in range(4):  # a pan of 3 px a frame
            cv2.imwrite(str(folder / f"{t:03d}.png"), scene[:160, 3 * t:3 * t + 192])
        streams.append(folder)
    output = tmp_path / "fused"
    code, _, err = run_main(monkeypatch, capsys, "fuse-video", *streams, "-o", output, "-q",
                            "--weights", weights_file, "--workers", "1")
    assert code == 0, err
    _check("fuse-video", {path.name: pixels_digest(path) for path in sorted(output.glob("*.png"))})
