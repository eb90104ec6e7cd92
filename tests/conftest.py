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
    from semfuse_rt.export.weights import random_vgg19

    return random_vgg19()
