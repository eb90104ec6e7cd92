"""The TensorRT stage's logic that needs no GPU: profiles, reduced-precision graphs, engine
manifests and cache invalidation, the builder's use of the TensorRT API, the captured
loop's algorithm, and what `build --trt` and the backend do without TensorRT.

TensorRT itself, CUDA graphs and the GPU parity are checked by benchmarks/trt_gpu_check.py
on a GPU machine."""
import json
import subprocess
import sys
import types

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.tensorrt import trt_build
from semfuse_rt.export.graphs.onnx_export import export_graphs
from semfuse_rt.export.tensorrt.trt_build import (
    EngineRequest,
    GpuInfo,
    TrtEnvironment,
    build_fusion_engines,
    engines_directory,
    ensure_engine,
    environment_mismatch,
)
from semfuse_rt.export.tensorrt.trt_precision import UNSCALE_NODE, calibrate_gradient_scale, lower_precision, scale_gradient
from semfuse_rt.export.tensorrt.trt_profiles import (
    DEFAULT_SHAPES,
    ShapePoint,
    input_profiles,
    onnx_input_dims,
    parse_shapes,
    pooled_size,
)

H100 = TrtEnvironment("10.9.0.34", GpuInfo("NVIDIA H100 80GB HBM3", (9, 0)))


@pytest.fixture(scope="module")
def graphs(vgg_weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("trt-graphs")
    return {layer: export_graphs(vgg_weights, layer, root / layer) for layer in ("relu1_1", "relu1_2")}


@pytest.fixture
def timing_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "trt"


class FakeBuilder:
    """Stands in for TensorRT's builder: a plan that names what it was built from, and a
    timing cache that grows by one entry per build."""

    def __init__(self):
        self.calls = []

    def __call__(self, model_bytes, request, timing):
        self.calls.append((request, timing))
        model = onnx.load_from_string(model_bytes)
        plan = json.dumps({"precision": request.precision, "nodes": len(model.graph.node)}).encode()
        return plan, (timing or b"") + b"entry;"


# --- profiles --------------------------------------------------------------------------------
def test_shapes_parse_print_and_reject_bad_specs():
    spec = parse_shapes(" 1x256x256, 2X512x512 ,4x1024x1024")
    assert spec == DEFAULT_SHAPES and str(spec) == "1x256x256,2x512x512,4x1024x1024"
    assert spec.covers(ShapePoint(3, 300, 1024)) and not spec.covers(ShapePoint(1, 1025, 512))
    for bad in ("1x256x256,2x512x512", "1x256,2x512x512,4x1024x1024", "1x256x256,2x512x512,axbxc",
                "0x256x256,2x512x512,4x1024x1024", "1x256x256,2x2048x512,4x1024x1024",
                "1x256x256,2x512x512,4x1024x99999"):
        with pytest.raises(SemfuseError) as error:
            parse_shapes(bad)
        assert "\n" not in str(error.value)


def test_widening_and_the_single_image_gradient_spec():
    wide = DEFAULT_SHAPES.widened(ShapePoint(6, 128, 1500))
    assert str(wide) == "1x128x256,2x512x512,6x1024x1500"
    assert wide.covers(ShapePoint(6, 128, 1500)) and wide.opt == DEFAULT_SHAPES.opt
    single = DEFAULT_SHAPES.single_image()
    assert (single.min.batch, single.opt.batch, single.max.batch) == (1, 1, 4)


@pytest.mark.parametrize("layer", ["relu1_1", "pool1", "relu3_1", "pool4"])
def test_feature_sizes_match_the_network_at_odd_sizes(layer):
    from semfuse_rt.export.networks.vgg19 import CONV_NAMES, VGG19Features, conv_shapes

    convs = {name: (torch.zeros(c_out, c_in, 3, 3), torch.zeros(c_out))
             for name, (c_in, c_out) in zip(CONV_NAMES, conv_shapes())}
    with torch.no_grad():
        out = VGG19Features(convs, layer)(torch.zeros(1, 3, 37, 53))
    size = pooled_size(layer)
    assert (size(37), size(53)) == tuple(out.shape[-2:])


def test_profiles_of_the_exported_gradient_graphs(graphs):
    # Without pooling the exporter merges height into feature_height; the mapping gives
    # both the same value then.
    dims = onnx_input_dims(onnx.load(graphs["relu1_1"].gradient))
    assert [name for name, _ in dims] == ["image", "target"]
    profiles = input_profiles(dims, DEFAULT_SHAPES.single_image(), pooled_size("relu1_1"))
    assert profiles["image"] == ((1, 3, 256, 256), (1, 3, 512, 512), (4, 3, 1024, 1024))
    assert profiles["target"] == ((1, 64, 256, 256), (1, 64, 512, 512), (4, 64, 1024, 1024))
    pooled = [("image", ["batch", 3, "height", "width"]),
              ("target", ["batch", 128, "feature_height", "feature_width"])]
    profiles = input_profiles(pooled, parse_shapes("1x255x301,2x512x512,4x1023x1024"), pooled_size("pool2"))
    assert profiles["target"] == ((1, 128, 63, 75), (2, 128, 128, 128), (4, 128, 255, 256))
    with pytest.raises(SemfuseError, match="cannot derive"):
        input_profiles([("x", ["batch", "sequence"])], DEFAULT_SHAPES)
    with pytest.raises(SemfuseError, match="too small"):
        input_profiles(pooled, parse_shapes("1x8x8,1x64x64,1x64x64"), pooled_size("pool4"))


# --- reduced precision -----------------------------------------------------------------------
def _run(model, feeds):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_fp16_graphs_keep_fp32_io_and_loss_and_match_fp32(graphs, rng):
    gradient = onnx.load(graphs["relu1_1"].gradient)
    features = onnx.load(graphs["relu1_1"].features)
    low = lower_precision(gradient, "fp16", ["loss"])
    for value in (*low.graph.input, *low.graph.output):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT, value.name
    conv_weights = {node.input[1] for node in low.graph.node if node.op_type == "Conv"}
    assert {i.data_type for i in low.graph.initializer if i.name in conv_weights} == {TensorProto.FLOAT16}
    produced = {out: node for node in low.graph.node for out in node.output}
    reductions = [node for node in low.graph.node if node.op_type == "ReduceSum"]
    assert reductions and all(produced[n.input[0]].op_type != "Conv" for n in reductions)

    pixels = (rng.random((1, 3, 40, 52)) * 255).astype(np.float32)
    target = _run(features, {"image": (rng.random((1, 3, 40, 52)) * 255).astype(np.float32)})[0]
    (loss32, grad32), (loss16, grad16) = (_run(m, {"image": pixels, "target": target}) for m in (gradient, low))
    assert abs(loss16[0] - loss32[0]) <= 1e-3 * loss32[0]
    assert np.linalg.norm(grad16 - grad32) <= 2e-2 * np.linalg.norm(grad32)
    fp16_features = _run(lower_precision(features, "fp16"), {"image": pixels})[0]
    reference = _run(features, {"image": pixels})[0]
    assert np.linalg.norm(fp16_features - reference) <= 5e-3 * np.linalg.norm(reference)
    bf16 = lower_precision(gradient, "bf16", ["loss"])
    assert TensorProto.BFLOAT16 in {i.data_type for i in bf16.graph.initializer}
    with pytest.raises(SemfuseError, match="no graph output"):
        lower_precision(gradient, "fp16", ["nope"])


@pytest.mark.slow
def test_fp16_backward_is_scaled_into_range(graphs, rng):
    from onnx.reference import ReferenceEvaluator

    gradient = onnx.load(graphs["relu1_2"].gradient)
    scale = calibrate_gradient_scale(gradient, pooled_size("relu1_2"))
    assert scale < 1 and np.log2(scale) == int(np.log2(scale))
    pixels = (rng.random((1, 3, 24, 24)) * 255).astype(np.float32)
    feeds = {"image": pixels, "target": np.zeros((1, 64, 24, 24), np.float32)}
    # The reference evaluator computes fp16 nodes in fp16, as an engine would.
    want = ReferenceEvaluator(gradient).run(None, feeds)[1]
    with np.errstate(over="ignore"):  # the unscaled backward overflows: that is the point
        plain = ReferenceEvaluator(lower_precision(gradient, "fp16", ["loss"])).run(None, feeds)[1]
    scaled_model = lower_precision(scale_gradient(gradient, scale), "fp16", ["loss"], [UNSCALE_NODE])
    scaled = ReferenceEvaluator(scaled_model).run(None, feeds)[1]
    assert np.abs(want).max() > 65504 and not np.isfinite(plain).all()
    assert np.isfinite(scaled).all() and np.linalg.norm(scaled - want) <= 2e-2 * np.linalg.norm(want)


# --- manifests and cache invalidation ----------------------------------------------------------
def _request(graphs, tmp_path, precision="fp16", spec=DEFAULT_SHAPES, workspace=4096):
    dims = onnx_input_dims(onnx.load(graphs["relu1_1"].features))
    return EngineRequest(graphs["relu1_1"].features, tmp_path / "engines" / "features.plan", precision,
                         input_profiles(dims, spec), str(spec), workspace)


def test_engine_is_reused_only_while_its_manifest_matches(graphs, tmp_path, timing_cache_home):
    build = FakeBuilder()
    request = _request(graphs, tmp_path)
    first = ensure_engine(request, H100, build=build)
    assert first.built and first.reason == "no engine built yet" and len(build.calls) == 1
    manifest = json.loads(request.manifest_path.read_text())
    assert manifest["tensorrt"] == "10.9.0.34" and manifest["precision"] == "fp16"
    assert manifest["gpu"] == {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert manifest["profiles"]["image"] == [[1, 3, 256, 256], [2, 3, 512, 512], [4, 3, 1024, 1024]]
    assert manifest["source_onnx_sha256"] == trt_build.sha256_of(graphs["relu1_1"].features)
    assert not ensure_engine(request, H100, build=build).built and len(build.calls) == 1

    changes = {
        "TensorRT": (request, TrtEnvironment("10.10.0.31", H100.gpu)),
        "A100": (request, TrtEnvironment(H100.tensorrt, GpuInfo("NVIDIA A100-SXM4-80GB", (8, 0)))),
        "sm 8.9": (request, TrtEnvironment(H100.tensorrt, GpuInfo("NVIDIA H100 80GB HBM3", (8, 9)))),
        "built for fp16": (_request(graphs, tmp_path, precision="fp32"), H100),
        "profiles": (_request(graphs, tmp_path, spec=parse_shapes("1x64x64,1x64x64,1x64x64")), H100),
        "workspace": (_request(graphs, tmp_path, workspace=512), H100),
    }
    for expected, (changed_request, env) in changes.items():
        ensure_engine(request, H100, build=build)  # back to the H100 fp16 engine
        calls = len(build.calls)
        rebuilt = ensure_engine(changed_request, env, build=build)
        assert rebuilt.built and expected in rebuilt.reason and len(build.calls) == calls + 1, expected

    ensure_engine(request, H100, build=build)
    # A runtime (strict=False) takes any profiles and workspace the engine was built with.
    loose = ensure_engine(_request(graphs, tmp_path, workspace=1024), H100, build=build, strict=False)
    assert not loose.built
    request.engine_path.write_bytes(request.engine_path.read_bytes() + b"x")
    assert "damaged" in ensure_engine(request, H100, build=build).reason
    assert ensure_engine(request, H100, build=build, force=True).reason == "forced"


def test_an_edited_onnx_graph_rebuilds_and_a_foreign_engine_is_refused(graphs, tmp_path, timing_cache_home):
    source = tmp_path / "features.onnx"
    source.write_bytes(graphs["relu1_1"].features.read_bytes())
    request = _request(graphs, tmp_path)
    request = EngineRequest(source, request.engine_path, "fp32", request.profiles, request.shapes)
    build = FakeBuilder()
    ensure_engine(request, H100, build=build)
    model = onnx.load(source)
    model.doc_string = "edited"
    onnx.save(model, source)
    assert "ONNX graph changed" in ensure_engine(request, H100, build=build).reason

    manifest = json.loads(request.manifest_path.read_text())
    assert environment_mismatch(manifest, H100, request.engine_path) is None
    other = TrtEnvironment(H100.tensorrt, GpuInfo("NVIDIA GeForce RTX 4090", (8, 9)))
    assert "RTX 4090" in environment_mismatch(manifest, other, request.engine_path)
    assert environment_mismatch(None, H100, request.engine_path) == "it has no manifest"


def test_timing_cache_is_per_gpu_and_tensorrt_and_persists(graphs, tmp_path, timing_cache_home):
    build = FakeBuilder()
    ensure_engine(_request(graphs, tmp_path, precision="fp32"), H100, build=build)
    ensure_engine(_request(graphs, tmp_path, precision="fp16"), H100, build=build)
    assert [timing for _, timing in build.calls] == [None, b"entry;"]
    cache = timing_cache_home / f"timing-nvidia-h100-80gb-hbm3-sm90-trt{H100.tensorrt}.cache"
    assert cache.read_bytes() == b"entry;entry;"
    other = TrtEnvironment("10.10.0.31", H100.gpu)
    ensure_engine(_request(graphs, tmp_path / "other"), other, build=build)
    assert build.calls[-1][1] is None  # another TensorRT starts its own cache


def test_bf16_needs_ampere(graphs, tmp_path, timing_cache_home):
    turing = TrtEnvironment(H100.tensorrt, GpuInfo("Tesla T4", (7, 5)))
    with pytest.raises(SemfuseError, match="bf16 needs compute capability 8.0"):
        ensure_engine(_request(graphs, tmp_path, precision="bf16"), turing, build=FakeBuilder())


def test_fusion_engines_profiles_widening_and_layout(graphs, timing_cache_home):
    build = FakeBuilder()
    directory = graphs["relu1_2"].directory
    engines = build_fusion_engines(directory, "relu1_2", H100, precision="fp16", build=build)
    assert set(engines) == {"features", "gradient"} and all(a.built for a in engines.values())
    assert engines["features"].path.parent == engines_directory(directory, H100, "fp16")
    assert engines["features"].path.parent.parts[-2:] == ("nvidia-h100-80gb-hbm3-sm90", "fp16")
    gradient = engines["gradient"].manifest
    assert gradient["profiles"]["image"] == [[1, 3, 256, 256], [1, 3, 512, 512], [4, 3, 1024, 1024]]
    assert gradient["profiles"]["target"][2] == [4, 64, 1024, 1024]
    assert 0 < gradient["gradient_scale"] < 1  # fp16 backward scaled into range
    assert engines["features"].manifest["profiles"]["image"][1] == [2, 3, 512, 512]

    reused = build_fusion_engines(directory, "relu1_2", H100, precision="fp16", need=ShapePoint(2, 300, 700),
                                  build=build)
    assert not any(a.built for a in reused.values()) and len(build.calls) == 2
    widened = build_fusion_engines(directory, "relu1_2", H100, precision="fp16", need=ShapePoint(2, 200, 700),
                                   build=build)
    assert all(a.built for a in widened.values())
    assert widened["features"].manifest["shapes"] == "1x200x256,2x512x512,4x1024x1024"
    # The widened engines now serve; a later runtime keeps them.
    again = build_fusion_engines(directory, "relu1_2", H100, precision="fp16", need=ShapePoint(1, 256, 256),
                                 build=build)
    assert not any(a.built for a in again.values())
    # The build command asks for exact shapes, and gets them back.
    exact = build_fusion_engines(directory, "relu1_2", H100, precision="fp16", shapes=DEFAULT_SHAPES, build=build)
    assert all(a.built and "profiles" in a.reason for a in exact.values())


# --- the builder's TensorRT calls ----------------------------------------------------------------
def fake_tensorrt(parse_ok=True):
    """Enough of TensorRT's Python API to record what tensorrt_build asks of it."""
    log = {"profiles": {}, "cleared": [], "pool": None}

    class Network:
        num_inputs = 2

        def get_input(self, i):
            return types.SimpleNamespace(name=("image", "target")[i])

    class Config:
        def __init__(self):
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            log["pool"] = (pool, size)

        def clear_flag(self, flag):
            log["cleared"].append(flag)

        def add_optimization_profile(self, profile):
            log["added"] = profile

        def create_timing_cache(self, data):
            if data not in (b"", b"old"):
                raise RuntimeError("corrupt")
            return types.SimpleNamespace(data=data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: self.cache.data + b"+new")

    class Profile:
        def set_shape(self, name, low, opt, high):
            log["profiles"][name] = (low, opt, high)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"PLAN"

    class Parser:
        num_errors = 1

        def __init__(self, network, logger):
            pass

        def parse(self, data, path):
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Conv): unsupported"

    trt = types.SimpleNamespace(
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder, OnnxParser=Parser,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=5),
        BuilderFlag=types.SimpleNamespace(TF32=7), MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"))
    return trt, log


def test_tensorrt_build_sets_profiles_workspace_typing_and_timing_cache(graphs, tmp_path):
    dims = onnx_input_dims(onnx.load(graphs["relu1_1"].gradient))
    profiles = input_profiles(dims, DEFAULT_SHAPES.single_image(), pooled_size("relu1_1"))
    request = EngineRequest(graphs["relu1_1"].gradient, tmp_path / "g.plan", "fp16", profiles,
                            str(DEFAULT_SHAPES), workspace_mib=256)
    trt, log = fake_tensorrt()
    plan, cache = trt_build.tensorrt_build(b"model", request, b"old", trt=trt)
    assert plan == b"PLAN" and cache == b"old+new"
    assert log["network_flags"] == 1 << 5 and log["cleared"] == [7]
    assert log["pool"] == ("workspace", 256 << 20)
    assert log["profiles"]["image"] == profiles["image"] and log["profiles"]["target"] == profiles["target"]
    assert trt_build.tensorrt_build(b"model", request, b"damaged", trt=trt)[1] == b"+new"

    failing, _ = fake_tensorrt(parse_ok=False)
    with pytest.raises(SemfuseError, match="cannot parse gradient.onnx: In node 3"):
        trt_build.tensorrt_build(b"model", request, None, trt=failing)
    partial = EngineRequest(request.onnx_path, request.engine_path, "fp16", {"image": profiles["image"]},
                            request.shapes)
    with pytest.raises(SemfuseError, match="no profile for input"):
        trt_build.tensorrt_build(b"model", partial, None, trt=trt)


# --- the captured loop's algorithm -----------------------------------------------------------------
class HostDevice:
    """CudaDevice's interface on host memory: capture records the calls, launch replays."""

    def __init__(self):
        self.memory, self.stream, self.recording, self.events = {}, 7, None, []

    def alloc(self, nbytes):
        from semfuse_rt.engine.backends.cuda_device import DeviceBuffer

        ptr = 4096 * (len(self.memory) + 1) << 20
        self.memory[ptr] = np.zeros(nbytes // 4, np.float32)
        return DeviceBuffer(ptr, nbytes)

    def view(self, ptr, count):
        base = max(p for p in self.memory if p <= ptr)
        offset = (ptr - base) // 4
        return self.memory[base][offset:offset + count]

    def do(self, action):
        (self.recording.append if self.recording is not None else lambda f: f())(action)

    def copy(self, dst, src, nbytes):
        self.do(lambda: self.view(dst, nbytes // 4).__setitem__(slice(None), self.view(src, nbytes // 4)))

    def zero(self, ptr, nbytes):
        self.do(lambda: self.view(ptr, nbytes // 4).fill(0))

    def synchronize(self):
        self.events.append("sync")

    def begin_capture(self):
        self.events.append("begin")
        self.recording = []

    def end_capture(self):
        graph, self.recording = self.recording, None
        self.events.append("end")
        return graph

    def instantiate(self, graph):
        return list(graph)

    def launch(self, graph):
        self.events.append("launch")
        for action in graph:
            action()

    def free(self, buffer):
        pass


class QuadraticGradient:
    """A gradient 'engine': loss = sum (x - target)^2 per image, grad = 2 (x - target)."""

    def __init__(self, device, shape):
        self.device, self.shape_ = device, shape

    def set_input_shapes(self, shapes):
        assert shapes["image"] == self.shape_

    def shape(self, name):
        return self.shape_ if name == "grad" else (self.shape_[0],)

    def enqueue(self, addresses, stream):
        count = int(np.prod(self.shape_))

        def run():
            x, y = self.device.view(addresses["image"], count), self.device.view(addresses["target"], count)
            self.device.view(addresses["grad"], count)[:] = 2 * (x - y)
            self.device.view(addresses["loss"], 1)[:] = np.square(x - y).sum()
        self.device.do(run)


class TorchAdamKernels:
    def __init__(self, device):
        self.device = device

    def adam_update(self, x, g, m, v, count, t, lr, betas, eps, stream):
        from semfuse_rt.kernels.adam_scalars import AdamSchedule
        from semfuse_rt.kernels.torch_rules import adam_update

        schedule = AdamSchedule(steps=t, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps)
        views = [torch.from_numpy(self.device.view(p, count)) for p in (x, m, v, g)]
        self.device.do(lambda: adam_update(*views, t, schedule))


@pytest.mark.parametrize("decay", ["constant", "cosine"])
def test_fixed_step_loop_replays_the_reference_optimisation(rng, decay):
    from semfuse_rt.kernels.adam_scalars import AdamSchedule
    from support.quadratic_runner import QuadraticRunner
    from semfuse_rt.engine.backends.captured_loop import FixedStepLoop

    shape, steps = (1, 3, 5, 4), 7
    device = HostDevice()
    loop = FixedStepLoop(device, QuadraticGradient(device, shape), TorchAdamKernels(device), shape, shape,
                         AdamSchedule(steps, 2.0, decay=decay))
    init = (rng.random(shape) * 255).astype(np.float32)
    target = (rng.random(shape) * 255).astype(np.float32)

    want = QuadraticRunner().optimise(torch.from_numpy(init), torch.from_numpy(target), AdamSchedule(steps, 2.0, decay=decay))
    for _ in range(2):  # the second run replays the graph captured by the first
        device.view(loop.init.ptr, init.size)[:] = init.ravel()
        device.view(loop.target.ptr, target.size)[:] = target.ravel()
        loop.launch()
        image = device.view(loop.x.ptr, init.size).reshape(shape)
        losses = device.view(loop.history.ptr, steps)
        np.testing.assert_allclose(image, want.image.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(losses, want.losses, rtol=1e-5)
    assert device.events == ["sync", "begin", "end", "launch", "launch"]


# --- without TensorRT ---------------------------------------------------------------------------
no_tensorrt = pytest.mark.skipif(trt_build.unavailable_reason() is None, reason="TensorRT and a GPU are here")


@no_tensorrt
def test_build_trt_without_tensorrt_says_so_in_one_line_and_writes_onnx(vgg_weights, tmp_path):
    from semfuse_rt.engine.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["build", "--trt", "--out", str(tmp_path / "g"), "--shapes",
                                      "1x256x256,1x512x512,2x768x768"])
    assert result.exit_code == 0, result.output
    message = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(message) == 1 and message[0].startswith("TensorRT engines not built:")
    assert {"features.onnx", "gradient.onnx", "manifest.json"} <= {p.name for p in (tmp_path / "g").iterdir()}
    bad = CliRunner().invoke(app, ["build", "--trt", "--out", str(tmp_path / "h"), "--shapes", "1x256x256"])
    assert isinstance(bad.exception, SemfuseError) and not (tmp_path / "h").exists()


@no_tensorrt
def test_trt_backend_is_not_offered_and_says_why(vgg_weights):
    from semfuse_rt.engine.backends import available_backends, create_runner, resolve_backend
    from semfuse_rt.engine.backends.trt.loader import usable

    assert not usable() and "trt" not in available_backends() and resolve_backend("auto") != "trt"
    with pytest.raises(SemfuseError) as error, create_runner("trt", vgg_weights, "relu1_1"):
        pass
    assert "TensorRT backend is not usable here" in str(error.value) and "\n" not in str(error.value)


def test_the_runtime_does_not_import_torch():
    code = ("import sys, semfuse_rt.engine.backends.trt.runtime, semfuse_rt.export.tensorrt.trt_build, "
            "semfuse_rt.export.tensorrt.trt_profiles; sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
