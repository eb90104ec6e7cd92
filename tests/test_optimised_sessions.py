"""ONNX Runtime sessions from an optimised model cached beside the graph (issue 31, item 6):
the same function as a session on the graph itself, the weights memory-mapped, a new key
for a rebuilt graph, and a damaged or unwritable cache costing only the optimisation."""
import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from semfuse_rt.engine.backends.ort.optimised_sessions import DATA, FOLDER, MODEL, open_session

PROVIDERS = ["CPUExecutionProvider"]


def write_graph(path, rng):
    """A 3 x 3 convolution, bias and ReLU: a weight large enough for the data file."""
    weight = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "weight", "bias"], ["convolved"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["convolved"], ["features"])],
        "small", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 16, "height", "width"])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    staged = path.with_name(path.name + ".new")
    onnx.save(model, str(staged))
    staged.replace(path)  # graphs are replaced by rename, as the exporters write them
    return path


def plain(graph, image):
    import onnxruntime as ort

    return ort.InferenceSession(str(graph), providers=PROVIDERS).run(None, {"image": image})[0]


@pytest.mark.parametrize("level", ["ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"])
def test_the_cached_model_computes_what_the_graph_does_and_maps_its_weights(tmp_path, rng, level):
    graph = write_graph(tmp_path / "small.onnx", rng)
    image = rng.random((1, 3, 37, 52), dtype=np.float32)
    first = open_session(graph, level, PROVIDERS)
    folders = list((tmp_path / FOLDER).iterdir())
    assert len(folders) == 1 and {p.name for p in folders[0].iterdir()} == {MODEL, DATA}
    again = open_session(graph, level, PROVIDERS)
    assert os.path.samefile(again._model_path, folders[0] / MODEL)
    for session in (first, again):
        assert np.allclose(session.run(None, {"image": image})[0], plain(graph, image), atol=1e-5)
    if sys.platform.startswith("linux"):
        with open("/proc/self/maps") as maps:
            assert str(folders[0] / DATA) in maps.read()
    assert not [p for p in (tmp_path / FOLDER).iterdir() if p.name.startswith(".")]  # no staging left


def test_a_rebuilt_graph_gets_a_new_model_and_the_old_one_goes(tmp_path, rng):
    graph = write_graph(tmp_path / "rule-max.onnx", rng)
    open_session(graph, "ORT_ENABLE_EXTENDED", PROVIDERS)
    before = set((tmp_path / FOLDER).iterdir())
    write_graph(graph, rng)
    image = rng.random((1, 3, 20, 30), dtype=np.float32)
    session = open_session(graph, "ORT_ENABLE_EXTENDED", PROVIDERS)
    after = set((tmp_path / FOLDER).iterdir())
    assert len(after) == 1 and not after & before
    assert np.allclose(session.run(None, {"image": image})[0], plain(graph, image), atol=1e-5)


def test_a_damaged_cached_model_is_rebuilt(tmp_path, rng):
    graph = write_graph(tmp_path / "small.onnx", rng)
    open_session(graph, "ORT_ENABLE_ALL", PROVIDERS)
    folder, = (tmp_path / FOLDER).iterdir()
    (folder / MODEL).write_bytes((folder / MODEL).read_bytes()[:100])
    image = rng.random((1, 3, 16, 16), dtype=np.float32)
    session = open_session(graph, "ORT_ENABLE_ALL", PROVIDERS)
    assert np.allclose(session.run(None, {"image": image})[0], plain(graph, image), atol=1e-5)
    assert onnx.load(str(folder / MODEL)).graph.node  # written again, whole


def test_a_folder_that_cannot_hold_the_cache_costs_only_the_optimisation(tmp_path, rng):
    graph = write_graph(tmp_path / "small.onnx", rng)
    (tmp_path / FOLDER).write_text("a file where the cache's folder would go")
    image = rng.random((1, 3, 16, 16), dtype=np.float32)
    session = open_session(graph, "ORT_ENABLE_ALL", PROVIDERS)
    assert np.allclose(session.run(None, {"image": image})[0], plain(graph, image), atol=1e-5)
    assert (tmp_path / FOLDER).is_file()
