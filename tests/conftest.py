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
