"""examples/deploy/fuse_onnx.cpp: a graph from `semfuse-rt export` run in C++ against ONNX
Runtime's C API, built with its Makefile (issue 30).

The headers come from `make -C examples/deploy onnxruntime` (ONNX Runtime 1.29.0's release
files, from npm; no PyPI or Debian bookworm package has them), or from ORT_INCLUDE; the
tests skip, saying so, where they are absent. Nothing is fetched here."""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES, dataset
from test_whole_fuse_export import _assert_within_one_level, _fused_by_the_package, _netpbm

DEPLOY = EXAMPLES / "deploy"
FROM_NPM = DEPLOY / "build" / "onnxruntime"  # where `make onnxruntime` puts the release's files
HEADERS = Path(os.environ.get("ORT_INCLUDE", FROM_NPM / "include"))


def _build(folder: Path, **variables: str | Path) -> Path:
    """The example compiled into FOLDER by its Makefile, warnings as errors."""
    for tool in ("make", "g++"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not (HEADERS / "onnxruntime_cxx_api.h").is_file():
        pytest.skip(f"ONNX Runtime's C/C++ headers are not in {HEADERS}: run `make -C {DEPLOY} onnxruntime` "
                    "(npm) or set ORT_INCLUDE")
    program = folder / "fuse_onnx"
    settings = {"OUT": program, "ORT_INCLUDE": HEADERS, "CXX": "g++", "CXXFLAGS": "-O2 -Wall -Wextra -Werror",
                **variables}
    build = subprocess.run(["make", "-C", str(DEPLOY), *(f"{name}={value}" for name, value in settings.items())],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0 and program.is_file(), build.stdout + build.stderr
    return program


@pytest.fixture(scope="module")
def fuse_onnx(tmp_path_factory) -> Path:
    """Linked to the library of the onnxruntime wheel that the Python side runs (1.32 here:
    it loads a blend graph in seconds, where 1.29 takes about a minute on 2 cores)."""
    import onnxruntime

    libraries = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.1.*"))
    if not libraries:
        pytest.skip(f"the onnxruntime {onnxruntime.__version__} package holds no libonnxruntime.so.1.* (C API)")
    folder = tmp_path_factory.mktemp("cpp")
    library = folder / "lib"
    library.mkdir()
    for name in ("libonnxruntime.so", "libonnxruntime.so.1"):  # the names -l and the soname look for
        (library / name).symlink_to(libraries[-1])
    return _build(folder, ORT_LIB_DIR=library)


def _run(program: Path, graph: Path, inputs, output: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), str(graph), *map(str, inputs), "-o", str(output)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def pair_graph(tmp_path_factory) -> Path:
    """`semfuse-rt export --preset blend`: pairs whose shorter side is 512 to 1023."""
    from semfuse_rt.engine.deploy.whole_fuse_export import export_fuse

    return export_fuse(tmp_path_factory.mktemp("pair") / "fuse.onnx", preset="blend", show_progress=False).path


@pytest.mark.slow
@pytest.mark.parametrize("paths", [
    (EXAMPLES / "lytro-01-A.jpg", EXAMPLES / "lytro-01-B.jpg"),  # colour, bundled
    ("infrared_visible", "Navi_IR.png", "infrared_visible", "Navi_Vis.png"),  # grey, 512 x 512
], ids=["colour", "grey"])
def test_the_cpp_example_fuses_a_pair_as_the_package_does(monkeypatch, capsys, tmp_path, fuse_onnx, pair_graph,
                                                           paths):
    if not isinstance(paths[0], Path):
        paths = (dataset(*paths[:2]), dataset(*paths[2:]))
    expected = _fused_by_the_package(monkeypatch, capsys, paths, tmp_path / "package.png", "--preset", "blend")
    result = tmp_path / f"example.{'pgm' if expected.ndim == 2 else 'ppm'}"
    run = _run(fuse_onnx, pair_graph, _netpbm(paths, tmp_path), result)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    _assert_within_one_level(result, expected)


@pytest.mark.slow
def test_the_cpp_example_fuses_three_images_and_refuses_other_sets(monkeypatch, capsys, tmp_path, fuse_onnx):
    from semfuse_rt.engine.deploy.whole_fuse_export import export_fuse

    paths = [dataset("multiexposure", "garage", f"garage{i}.jpg") for i in (1, 3, 5)]
    graph = export_fuse(tmp_path / "three.onnx", images=3, size="348x222", show_progress=False).path
    expected = _fused_by_the_package(monkeypatch, capsys, paths, tmp_path / "package.png", "--preset", "blend")
    converted = _netpbm(paths, tmp_path)
    run = _run(fuse_onnx, graph, converted, tmp_path / "example.ppm")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    _assert_within_one_level(tmp_path / "example.ppm", expected)

    too_large = _netpbm([dataset("multifocus_triple", f"lytro-01-{c}.jpg") for c in "ABC"], tmp_path)
    for inputs, output, fragment in (
            (too_large, "refused.ppm", "takes images whose shorter side is 128 to 255 pixels; these have 520"),
            (converted[:2], "refused.ppm", "three.onnx fuses 3 images; got 2"),
            (converted, "refused.pgm", "refused.pgm: the result of RGB inputs is a PPM image: name it .ppm"),
            (converted, converted[2].name, "garage5.ppm: is an input")):
        before = (tmp_path / "garage5.ppm").read_bytes()
        run = _run(fuse_onnx, graph, inputs, tmp_path / output)
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith("fuse_onnx: error: ") and fragment in run.stderr, run.stderr
        assert (tmp_path / "garage5.ppm").read_bytes() == before
        assert not list(tmp_path.glob("refused*")) and not list(tmp_path.glob("*.partial"))


def test_the_npm_release_builds_and_fuses_a_grey_set(monkeypatch, capsys, tmp_path, weights_file, rng):
    """The Makefile's own recipe: the headers and ONNX Runtime 1.29's library from `make
    onnxruntime`. A graph with a mean start and steps (one that loads at once), on grey images."""
    from semfuse_rt.engine.deploy.whole_fuse_export import export_fuse

    if not (FROM_NPM / "lib" / "libonnxruntime.so.1").is_file():
        pytest.skip(f"ONNX Runtime's library is not in {FROM_NPM / 'lib'}: run `make -C {DEPLOY} onnxruntime` (npm)")
    program = _build(tmp_path)  # ORT_LIB_DIR as the Makefile has it
    graph = export_fuse(tmp_path / "steps.onnx", preset="paper", steps=3, mean_base=4.0, images=3,
                        weights=weights_file, show_progress=False).path
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"grey{i}.png")
        Image.fromarray(rng.integers(0, 256, (21, 34), dtype=np.uint8)).save(paths[-1])
    expected = _fused_by_the_package(monkeypatch, capsys, paths, tmp_path / "package.png", "--preset", "paper",
                                     "--steps", "3", "--mean-base", "4", "--weights", weights_file)
    run = _run(program, graph, _netpbm(paths, tmp_path), tmp_path / "example.pgm")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    got = np.asarray(Image.open(tmp_path / "example.pgm"))
    assert got.shape == expected.shape == (21, 34)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
