import os
from pathlib import Path

import numpy as np
import pytest

DATASETS = Path(os.environ.get("SEMFUSE_RT_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="session")
def vgg_weights():
    """The real Oxford VGG19 weights (fetched and cached on first use)."""
    from semfuse_rt.export.weights import load_vgg19

    return load_vgg19(show_progress=False)


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)


def dataset(*parts) -> Path:
    path = DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared dataset {path} not present")
    return path


def tie_prone_features(rng, k: int, shape, dtype) -> list[np.ndarray]:
    """Few distinct magnitudes, both signs, some NaN and inf: many exact ties of |F|."""
    features = []
    for _ in range(k):
        f = rng.integers(-3, 4, size=shape).astype(np.float32) * np.float32(0.5)
        f[rng.random(shape) < 0.03] = np.nan
        f[rng.random(shape) < 0.01] = np.inf
        f[rng.random(shape) < 0.01] = -np.inf
        features.append(f.astype(dtype))
    return features


@pytest.fixture(scope="session")
def random_vgg_weights():
    """Seeded weights with VGG19's shapes, for tests that need no real ones (the GPU
    machines cannot fetch those)."""
    import hashlib

    import torch

    from semfuse_rt.export.normalisation import CAFFE
    from semfuse_rt.export.vgg19 import CONV_NAMES, conv_shapes
    from semfuse_rt.export.weights import VGG19Weights

    generator = torch.Generator().manual_seed(0)
    convs = {name: (torch.randn(c_out, c_in, 3, 3, generator=generator) * (2 / (9 * c_in)) ** 0.5 / 64,
                    torch.randn(c_out, generator=generator) * 0.1)
             for name, (c_in, c_out) in zip(CONV_NAMES, conv_shapes())}
    return VGG19Weights(convs, CAFFE, hashlib.sha256(b"seed 0").hexdigest(), "random (seed 0)")
