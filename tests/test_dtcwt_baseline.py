"""The `dtcwt` baseline runs the project's own DT-CWT (export/graphs/dtcwt_graph.py) since the
`dtcwt` package left the dependencies: its images against the ones the package-based baseline
gave on crops of the shared datasets (recorded in data/dtcwt_oracle.npz by
data/make_dtcwt_oracle.py), grey and colour, K = 2 and 3, with and without verification."""
from pathlib import Path

import numpy as np
import pytest

from conftest import dataset
from semfuse_rt.engine.evaluation.baselines import fuse_baseline
from semfuse_rt.engine.io.images import load_image

ORACLE = Path(__file__).resolve().parent / "data" / "dtcwt_oracle.npz"

# name: (files, crop (rows, cols)), as data/make_dtcwt_oracle.py cropped them; a case from JPEG
# files is fused from the inputs recorded with it, so that another decoder changes nothing.
CASES = {
    "medical-c01": (("medical/c01_1.tif", "medical/c01_2.tif"), (slice(64, 192), slice(48, 208))),
    "infrared-camp-verified": (("infrared_visible/Camp_IR.png", "infrared_visible/Camp_Vis.png"),
                               (slice(100, 221), slice(120, 281))),
    "triple-colour": (("multifocus_triple/lytro-01-A.jpg", "multifocus_triple/lytro-01-B.jpg",
                       "multifocus_triple/lytro-01-C.jpg"), None),
}
# The package's float64 arithmetic and ours round differently in the last bits (three inputs'
# lowpasses are summed one by one here), so a pixel on a .5 boundary may round the other way:
# at most one grey level, in at most one pixel in a thousand. (Measured when the baseline
# changed: no pixel of these crops differs; on the full images, 11 of the 811,200 values of
# the colour triple by 1, none of the others.)
MOST_GREY_LEVELS = 1
MOST_DIFFERING = 1e-3


@pytest.fixture(scope="module")
def oracle():
    with np.load(ORACLE) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", sorted(CASES))
def test_baseline_gives_the_packages_images(oracle, name):
    files, crop = CASES[name]
    if crop is None:
        images = list(oracle[f"baseline/{name}/input"])
    else:
        images = [np.ascontiguousarray(load_image(dataset(file))[crop]) for file in files]
    verify = int(oracle[f"baseline/{name}/verify"])
    expected = oracle[f"baseline/{name}/fused"]
    fused = fuse_baseline(images, "dtcwt", verify=verify)
    assert fused.shape == expected.shape and fused.dtype == expected.dtype
    difference = np.abs(fused.astype(np.int64) - expected)
    assert difference.max() <= MOST_GREY_LEVELS
    assert np.count_nonzero(difference) <= MOST_DIFFERING * difference.size
