"""Writes tests/data/dtcwt_oracle.npz: what the third-party `dtcwt` package (0.14, the
project's DT-CWT before it had its own) computes, for tests/test_dtcwt_graph.py and
tests/test_dtcwt_baseline.py to compare the project's transform against.

The package needs numpy < 2 (its metadata says so), so it cannot be a dependency, not even a
test-only one: the oracle's outputs are recorded once, here. Run it where the package imports,
from the repository root, with the project installed and the shared datasets beside it:

    pip install 'numpy<2' 'dtcwt==0.14.0' && python tests/data/make_dtcwt_oracle.py

It records:
- `filters/<set>/<i>`: the package's filters, `dtcwt.coeffs.biort(set)` and `qshift(set)[:8]`,
  for every set the project's transform takes;
- `transform/<H>x<W>/...`: a seeded standard-normal plane, the package's 4-level
  `Transform2d("near_sym_a", "qshift_a").forward` of it (lowpass; per level the six
  orientations' real and imaginary parts, (6, h, w)) and its `inverse` of that pyramid;
- `choose_max/<case>/...`: K planes and the package's choose-max fusion of them (mean of the
  lowpasses, each highpass coefficient from the input of largest |z|, ties to the lowest k;
  with `verify`, the choices majority-filtered first), exactly as engine/evaluation/baselines.py
  computed it with the package;
- `baseline/<case>/...`: `fuse_baseline(images, "dtcwt", verify=...)` with that rule, on crops
  of images of the shared datasets (odd and even sizes, grey and colour, K = 2 and 3).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "dtcwt_oracle.npz"
DATASETS = ROOT.parent / "shared" / "datasets"

# Sizes whose levels need no extension, need it, are odd, and are too small for 4 levels.
TRANSFORM_SIZES = [(16, 24), (18, 22), (21, 27), (9, 6)]
# name: (K, height, width, verify); the planes are integers 0..255 (stored as uint8) with a
# shared flat corner, where all highpasses are equal (zero) and ties go to the lowest k.
CHOOSE_MAX = {"k2-32x32": (2, 32, 32, 0), "k3-27x35": (3, 27, 35, 0),
              "k2-32x32-verified": (2, 32, 32, 3), "k3-27x35-verified": (3, 27, 35, 3)}
# name: (files, crop (rows, cols), verify): crops, to keep the file small; the inputs are stored
# where they were decoded from JPEG, so that a different decoder does not change the test.
BASELINE = {
    "medical-c01": (("medical/c01_1.tif", "medical/c01_2.tif"), (slice(64, 192), slice(48, 208)), 0),
    "infrared-camp-verified": (("infrared_visible/Camp_IR.png", "infrared_visible/Camp_Vis.png"),
                               (slice(100, 221), slice(120, 281)), 3),
    "triple-colour": (("multifocus_triple/lytro-01-A.jpg", "multifocus_triple/lytro-01-B.jpg",
                       "multifocus_triple/lytro-01-C.jpg"), (slice(200, 247), slice(150, 213)), 0),
}


def _majority(labels: np.ndarray, count: int, window: int) -> np.ndarray:
    """labels (h, w) -> per coefficient the label most frequent in the window x window around
    it (clipped at the borders); a tie keeps the centre's label if it is among the tied, else
    the lowest (docs/method.md)."""
    half = window // 2
    scores = []
    for k in range(count):
        votes = (labels == k).astype(np.float64)
        padded = np.pad(votes, half)
        counts = sum(padded[i:i + labels.shape[0], j:j + labels.shape[1]]
                     for i in range(window) for j in range(window))
        scores.append(2 * counts + votes)
    return np.argmax(scores, axis=0)


def _fuse_band(bands: list[np.ndarray], verify: int) -> np.ndarray:
    stack = np.stack(bands)  # (K, h, w, 6)
    chosen = np.argmax(np.abs(stack), axis=0)
    if verify:
        chosen = np.stack([_majority(chosen[..., o], len(bands), verify) for o in range(6)], -1)
    return np.take_along_axis(stack, chosen[None], axis=0)[0]


def package_choose_max(planes, *, verify: int = 0) -> np.ndarray:
    """The package-based DT-CWT choose-max of K planes (H, W)."""
    import dtcwt

    height, width = planes[0].shape
    padded = [np.pad(plane, ((0, height % 2), (0, width % 2)), mode="edge") for plane in planes]
    transform = dtcwt.Transform2d(biort="near_sym_a", qshift="qshift_a")
    pyramids = [transform.forward(plane, nlevels=4) for plane in padded]
    lowpass = np.mean([p.lowpass for p in pyramids], axis=0)
    highpasses = tuple(_fuse_band([p.highpasses[level] for p in pyramids], verify) for level in range(4))
    return transform.inverse(dtcwt.Pyramid(lowpass, highpasses))[:height, :width]


def main() -> None:
    import dtcwt

    sys.path.insert(0, str(ROOT))
    from semfuse_rt.engine.evaluation import baselines
    from semfuse_rt.engine.io.images import load_image

    from semfuse_rt.export.graphs.dtcwt_graph import BIORTS, QSHIFTS

    record: dict[str, np.ndarray] = {}
    for name in BIORTS:
        for i, h in enumerate(dtcwt.coeffs.biort(name)):
            record[f"filters/{name}/{i}"] = np.ravel(h)
    for name in QSHIFTS:
        for i, h in enumerate(dtcwt.coeffs.qshift(name)[:8]):
            record[f"filters/{name}/{i}"] = np.ravel(h)
    rng = np.random.default_rng(29)
    reference = dtcwt.Transform2d(biort="near_sym_a", qshift="qshift_a")
    for height, width in TRANSFORM_SIZES:
        key = f"transform/{height}x{width}"
        plane = rng.standard_normal((height, width))
        pyramid = reference.forward(plane, nlevels=4)
        record[f"{key}/input"] = plane
        record[f"{key}/lowpass"] = pyramid.lowpass
        for level, highpass in enumerate(pyramid.highpasses):
            record[f"{key}/real{level}"] = np.moveaxis(highpass.real, -1, 0)
            record[f"{key}/imag{level}"] = np.moveaxis(highpass.imag, -1, 0)
        record[f"{key}/inverse"] = reference.inverse(pyramid)
    for name, (k, height, width, verify) in CHOOSE_MAX.items():
        planes = rng.integers(0, 256, (k, height, width), dtype=np.uint8)
        planes[:, :12, :12] = 100
        record[f"choose_max/{name}/input"] = planes
        planes = planes.astype(np.float64)
        record[f"choose_max/{name}/verify"] = np.array(verify)
        record[f"choose_max/{name}/fused"] = package_choose_max(list(planes), verify=verify)
    baselines.BASELINES["dtcwt"] = package_choose_max
    for name, (files, crop, verify) in BASELINE.items():
        images = [load_image(DATASETS / file) for file in files]
        images = [np.ascontiguousarray(image[crop]) for image in images]
        if any(file.endswith(".jpg") for file in files):
            record[f"baseline/{name}/input"] = np.stack(images)
        record[f"baseline/{name}/verify"] = np.array(verify)
        record[f"baseline/{name}/fused"] = baselines.fuse_baseline(images, "dtcwt", verify=verify)
    np.savez_compressed(OUT, **record)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes; dtcwt {dtcwt.__version__}, numpy {np.__version__})")


if __name__ == "__main__":
    main()
