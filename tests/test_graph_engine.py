"""`build --trt --graph FILE.onnx`: a TensorRT engine of a whole-fuse graph that `export`
wrote (issue 30). TensorRT cannot run here: a fake builder stands in for it, as in
test_trt_build.py, and what it is handed (the graph as exported, the profile) and what is
written are checked; benchmarks/trt_gpu_check.py is where TensorRT itself runs."""
import hashlib
import json
import shutil

import pytest

from conftest import run_main
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.tensorrt import trt_build
from semfuse_rt.export.tensorrt.trt_build import GpuInfo, TrtEnvironment
from semfuse_rt.export.tensorrt.trt_profiles import parse_shapes
from semfuse_rt.export.tensorrt.whole_fuse_engine import build_whole_fuse_engine, engine_path, whole_fuse_shapes

H100 = TrtEnvironment("10.9.0.34", GpuInfo("NVIDIA H100 80GB HBM3", (9, 0)))
no_tensorrt = pytest.mark.skipif(trt_build.unavailable_reason() is None, reason="TensorRT and a GPU are here")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default preset for pairs whose shorter side is 64 to 127."""
    from semfuse_rt.engine.deploy import export_fuse

    return export_fuse(tmp_path_factory.mktemp("graph") / "blend.onnx", size="64x64", show_progress=False)


@pytest.fixture
def graph(exported, tmp_path, monkeypatch):
    """A copy of the exported graph and its manifest, and a cache of this test's own."""
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "graph"
    folder.mkdir()
    shutil.copy(exported.path, folder)
    shutil.copy(exported.manifest_path, folder)
    return folder / exported.path.name


class FakeBuilder:
    def __init__(self):
        self.calls = []

    def __call__(self, model_bytes, request, timing):
        self.calls.append((model_bytes, request))
        return b"plan of " + hashlib.sha256(model_bytes).hexdigest().encode(), (timing or b"") + b"entry;"


def test_the_default_profile_spans_the_sides_the_graph_takes(exported):
    assert str(whole_fuse_shapes(exported.manifest)) == "2x64x64,2x64x64,2x127x127"
    assert str(whole_fuse_shapes({"images": 3, "shorter_side": [16, None]})) == "3x256x256,3x512x512,3x1024x1024"
    assert str(whole_fuse_shapes({"images": 2, "shorter_side": [700, None]})) == "2x700x700,2x700x700,2x1024x1024"
    assert str(whole_fuse_shapes({"images": 2, "shorter_side": [1200, None]})) == "2x1200x1200,2x1200x1200,2x1200x1200"


def test_a_profile_outside_what_the_graph_takes_is_refused(exported):
    # A landscape box: every shorter side 64..100, the longer ones beyond the range.
    wide = parse_shapes("2x64x64,2x64x200,2x100x300")
    assert whole_fuse_shapes(exported.manifest, wide) == wide
    for shapes, words in (("2x63x200,2x64x200,2x100x300", "shorter sides of 63 to 100"),
                          ("2x64x64,2x64x64,2x128x128", "shorter sides of 64 to 128"),
                          ("1x64x64,2x64x64,2x100x100", "every N must be 2")):
        with pytest.raises(SemfuseError, match=words):
            whole_fuse_shapes(exported.manifest, parse_shapes(shapes))


def test_the_engine_is_built_from_the_graph_as_exported_and_reused(graph):
    manifest = json.loads(graph.with_name(graph.name + ".json").read_text())
    before = {path.name: path.read_bytes() for path in graph.parent.iterdir()}
    builder = FakeBuilder()
    artefact = build_whole_fuse_engine(graph, manifest, H100, build=builder)
    assert artefact.built and artefact.path == graph.parent / "blend.nvidia-h100-80gb-hbm3-sm90.plan"
    (model_bytes, request), = builder.calls
    # Strongly typed: TensorRT gets the graph's own types, nothing lowered or rewritten.
    assert model_bytes == before[graph.name]
    assert dict(request.profiles) == {"images": ((2, 64, 64, 3), (2, 64, 64, 3), (2, 127, 127, 3))}
    stored = json.loads(request.manifest_path.read_text())
    assert stored["precision"] == "fp32" and stored["shapes"] == "2x64x64,2x64x64,2x127x127"
    assert stored["source_onnx_sha256"] == hashlib.sha256(before[graph.name]).hexdigest()
    assert stored["engine_sha256"] == hashlib.sha256(artefact.path.read_bytes()).hexdigest()
    assert {path.name: path.read_bytes() for path in graph.parent.iterdir() if path.name in before} == before

    again = build_whole_fuse_engine(graph, manifest, H100, build=builder)
    assert not again.built and len(builder.calls) == 1
    wider = build_whole_fuse_engine(graph, manifest, H100, shapes=parse_shapes("2x64x64,2x96x96,2x127x127"),
                                    build=builder)
    assert wider.built and wider.reason is not None and wider.reason.startswith("built with other profiles")
    elsewhere = build_whole_fuse_engine(graph, manifest, H100, directory=graph.parent / "engines", build=builder)
    assert elsewhere.path == engine_path(graph, H100, graph.parent / "engines") and elsewhere.path.is_file()


@no_tensorrt
def test_build_trt_graph_without_tensorrt_is_one_line_and_writes_nothing(monkeypatch, capsys, graph):
    before = sorted(graph.parent.iterdir())
    code, stdout, err = run_main(monkeypatch, capsys, "build", "--trt", "--graph", graph, "--out",
                                 graph.parent / "engines")
    assert code == 2 and stdout == ""
    assert err.startswith("semfuse-rt: error: TensorRT engine not built: ") and err.count("\n") == 1, err
    assert sorted(graph.parent.iterdir()) == before


@pytest.mark.parametrize("options, words", [
    ([], "--graph builds a TensorRT engine of a graph that semfuse-rt export wrote; add --trt"),
    (["--trt", "--layer", "relu1_2", "--opset", "18"], "--layer and --opset apply to the per-layer graphs"),
    (["--trt", "--weights", "vgg.pt"], "--weights applies to the per-layer graphs"),
    (["--trt", "--precision", "fp16"], "the engine computes in its graph's own precision, fp32 for blend.onnx; "
                                       "export the graph with --fp16"),
    (["--trt", "--shapes", "2x32x32,2x64x64,2x100x100"], "shorter side is 64 to 127 pixels"),
], ids=["no --trt", "layer and opset", "weights", "precision", "shapes"])
def test_options_that_do_not_apply_to_a_graph_are_refused(monkeypatch, capsys, graph, options, words):
    before = sorted(graph.parent.iterdir())
    code, stdout, err = run_main(monkeypatch, capsys, "build", "--graph", graph, *options)
    assert code == 2 and stdout == "" and words in err and err.count("\n") == 1, err
    assert sorted(graph.parent.iterdir()) == before


def test_a_changed_graph_is_refused(monkeypatch, capsys, graph):
    graph.write_bytes(graph.read_bytes() + b"\0")
    code, _, err = run_main(monkeypatch, capsys, "build", "--trt", "--graph", graph)
    assert code == 2 and "the graph was changed or renamed after the export" in err, err
