"""TensorRT engines from the exported ONNX graphs: profiles, precision, timing cache, and a
manifest per engine so that an engine is only ever used on the GPU and TensorRT it was
built for.

Layout, inside a graph directory (the one `export_graphs` writes):

    trt/<gpu-key>/<precision>/features.plan, features.manifest.json,
                              gradient.plan, gradient.manifest.json

where gpu-key names the GPU model and compute capability (`nvidia-h100-80gb-hbm3-sm90`).
The timing cache, which TensorRT keys by device and version itself, is shared by every
build on one GPU and TensorRT: `cache_dir("trt")/timing-<gpu-key>-trt<version>.cache`.

An engine is reused only when its manifest names the running TensorRT version, GPU name and
compute capability, the precision, the sha256 of the ONNX file it was built from, and the
sha256 of this builder's code, and the plan file still has its recorded sha256; anything
else is rebuilt (and says why). Reduced precision is written into the graph before the
build (export/tensorrt/trt_precision.py), so builds are strongly typed on TensorRT 10 and 11 alike.

Any ONNX graph builds the same way through `ensure_engine(EngineRequest(...))`: give it the
file, the engine path, {input: (min, opt, max)} profiles (trt_profiles.input_profiles
derives them from a ShapeSpec), and a `prepare` hook for reduced precision.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from semfuse_rt.errors import SemfuseError
from semfuse_rt.cache import atomic_write_bytes, cache_dir, sha256_of
from semfuse_rt.export.graphs.manifest import source_sha256
from semfuse_rt.export.tensorrt.trt_profiles import (
    DEFAULT_SHAPES,
    Profile,
    ShapePoint,
    ShapeSpec,
    input_profiles,
    onnx_input_dims,
    parse_shapes,
    pooled_size,
    profile_covers,
    profiles_to_json,
)

if TYPE_CHECKING:  # imported where a graph is prepared: onnx takes a while to import
    import onnx

PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_PRECISION = "fp16"
DEFAULT_WORKSPACE_MIB = 4096
ENGINE_FORMAT = "semfuse-rt/trt-engine/1"
MIN_TENSORRT = (10, 0)
# bf16 tensor cores arrived with Ampere (sm80); fp16 arithmetic needs sm53.
MIN_COMPUTE_CAPABILITY = {"fp32": (0, 0), "fp16": (5, 3), "bf16": (8, 0)}
# Fields a runtime load accepts whatever their value: they change speed, not results,
# and the runtime checks that its shapes fit the stored profiles itself.
TUNING_FIELDS = ("profiles", "shapes", "workspace_mib")

# Hook turning the fp32 ONNX model into the one to build at a precision; returns the model
# and anything worth recording in the manifest.
Prepare = Callable[["onnx.ModelProto", str], tuple["onnx.ModelProto", dict]]
Log = Callable[[str], None]


class TrtUnavailable(SemfuseError):
    """TensorRT, cuda-python or a CUDA GPU is missing; the message says which."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]

    @property
    def key(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "gpu"
        major, minor = self.compute_capability
        return f"{slug}-sm{major}{minor}"

    def as_json(self) -> dict:
        major, minor = self.compute_capability
        return {"name": self.name, "compute_capability": f"{major}.{minor}"}


@dataclass(frozen=True)
class TrtEnvironment:
    tensorrt: str
    gpu: GpuInfo

    @property
    def key(self) -> str:
        return f"{self.gpu.key}-trt{self.tensorrt}"


# --- what is here ------------------------------------------------------------------------
def _cudart():
    from semfuse_rt.kernels.cuda_api import cuda_runtime

    try:
        return cuda_runtime()
    except SemfuseError as error:
        raise TrtUnavailable(str(error)) from error


def tensorrt_version() -> str:
    try:
        import tensorrt
    except ImportError as error:
        raise TrtUnavailable("TensorRT is not installed (pip install 'semfuse-rt[gpu]' on a machine "
                             "with an NVIDIA GPU)") from error
    except Exception as error:  # a wheel whose libraries do not load raises OSError and the like
        raise TrtUnavailable(f"TensorRT is installed but does not load: {error}") from error
    version = tensorrt.__version__
    if tuple(int(p) for p in re.findall(r"\d+", version)[:2]) < MIN_TENSORRT:
        needed = ".".join(map(str, MIN_TENSORRT))
        raise TrtUnavailable(f"TensorRT {version} is too old; semfuse-rt needs {needed} or newer")
    return version


def current_gpu(device: int = 0) -> GpuInfo:
    runtime = _cudart()
    try:
        status, count = runtime.cudaGetDeviceCount()
    except Exception as error:  # no libcuda at all
        raise TrtUnavailable(f"no CUDA driver: {error}") from error
    if int(status) != 0 or count < 1:
        raise TrtUnavailable("no CUDA GPU is visible")
    if device >= count:
        raise TrtUnavailable(f"CUDA device {device} does not exist ({count} visible)")
    status, properties = runtime.cudaGetDeviceProperties(device)
    if int(status) != 0:
        raise TrtUnavailable(f"cannot query CUDA device {device}: {getattr(status, 'name', status)}")
    name = properties.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return GpuInfo(str(name).strip(), (int(properties.major), int(properties.minor)))


def detect_environment(device: int = 0) -> TrtEnvironment:
    """The running TensorRT and GPU, or TrtUnavailable saying what is missing."""
    version = tensorrt_version()
    return TrtEnvironment(version, current_gpu(device))


def unavailable_reason(device: int = 0) -> str | None:
    try:
        detect_environment(device)
    except TrtUnavailable as error:
        return str(error)
    return None


# --- one engine --------------------------------------------------------------------------
def builder_source_sha256() -> str:
    """Identifies the code that turns ONNX into engines: editing it invalidates engines."""
    from semfuse_rt.export.tensorrt import trt_precision, trt_profiles

    return source_sha256(trt_precision, trt_profiles, sys.modules[__name__])


def lowering(keep_fp32_outputs: tuple[str, ...] = ()) -> Prepare:
    """The default `prepare`: reduced precision everywhere except what feeds these outputs."""
    def prepare(model, precision):
        from semfuse_rt.export.tensorrt.trt_precision import lower_precision

        return lower_precision(model, precision, keep_fp32_outputs), {}

    return prepare


@dataclass(frozen=True)
class EngineRequest:
    onnx_path: Path
    engine_path: Path
    precision: str
    profiles: Mapping[str, Profile]
    shapes: str  # the spec the profiles came from (recorded, and widened by runtimes)
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    prepare: Prepare = field(default_factory=lowering, compare=False)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise SemfuseError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        if self.workspace_mib < 1:
            raise SemfuseError(f"workspace must be at least 1 MiB, got {self.workspace_mib}")

    @property
    def manifest_path(self) -> Path:
        return self.engine_path.with_name(self.engine_path.stem + ".manifest.json")


@dataclass
class EngineArtefact:
    path: Path
    manifest: dict
    built: bool
    reason: str | None = None  # why it was (re)built


def expected_manifest(request: EngineRequest, env: TrtEnvironment, onnx_sha256: str) -> dict:
    """The fields a stored engine's manifest must carry to be used here."""
    return {
        "format": ENGINE_FORMAT,
        "tensorrt": env.tensorrt,
        "gpu": env.gpu.as_json(),
        "precision": request.precision,
        "source_onnx_sha256": onnx_sha256,
        "builder_sha256": builder_source_sha256(),
        "profiles": profiles_to_json(request.profiles),
        "shapes": request.shapes,
        "workspace_mib": request.workspace_mib,
    }


def manifest_mismatch(manifest: dict | None, expected: dict, engine_path: Path | None = None,
                      ignore: tuple[str, ...] = ()) -> str | None:
    """Why a stored engine may not be used here, or None when it may."""
    if manifest is None:
        return "no engine built yet"
    if manifest.get("format") != expected["format"]:
        return "the engine was written by another semfuse-rt format"
    if manifest.get("tensorrt") != expected["tensorrt"]:
        return f"built with TensorRT {manifest.get('tensorrt')}, running {expected['tensorrt']}"
    if manifest.get("gpu") != expected["gpu"]:
        built = manifest.get("gpu") or {}
        return (f"built for {built.get('name')} (sm {built.get('compute_capability')}), running on "
                f"{expected['gpu']['name']} (sm {expected['gpu']['compute_capability']})")
    if manifest.get("precision") != expected["precision"]:
        return f"built for {manifest.get('precision')}, asked for {expected['precision']}"
    if manifest.get("source_onnx_sha256") != expected["source_onnx_sha256"]:
        return "its ONNX graph changed"
    if manifest.get("builder_sha256") != expected["builder_sha256"]:
        return "the engine builder changed"
    for key in TUNING_FIELDS:
        if key not in ignore and manifest.get(key) != expected[key]:
            return f"built with other {key.replace('_', ' ')} ({manifest.get(key)})"
    if engine_path is not None and (not engine_path.is_file()
                                    or sha256_of(engine_path) != manifest.get("engine_sha256")):
        return "the engine file is missing or damaged"
    return None


def environment_mismatch(manifest: dict | None, env: TrtEnvironment, engine_path: Path) -> str | None:
    """Why an engine file may not be loaded on `env` (TensorRT, GPU, file integrity), or None."""
    if manifest is None:
        return "it has no manifest"
    expected = {"format": ENGINE_FORMAT, "tensorrt": env.tensorrt, "gpu": env.gpu.as_json(),
                "precision": manifest.get("precision"), "source_onnx_sha256": manifest.get("source_onnx_sha256"),
                "builder_sha256": manifest.get("builder_sha256")}
    return manifest_mismatch(manifest, expected, engine_path, ignore=TUNING_FIELDS)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def timing_cache_path(env: TrtEnvironment) -> Path:
    return cache_dir("trt") / f"timing-{env.key}.cache"


def _check_precision(precision: str, env: TrtEnvironment) -> None:
    needed = MIN_COMPUTE_CAPABILITY[precision]
    if env.gpu.compute_capability < needed:
        have = ".".join(map(str, env.gpu.compute_capability))
        raise SemfuseError(f"{precision} needs compute capability {needed[0]}.{needed[1]} or newer; "
                           f"{env.gpu.name} has {have}")


def ensure_engine(request: EngineRequest, env: TrtEnvironment, *, force: bool = False, strict: bool = True,
                  build: Callable | None = None, log: Log | None = None) -> EngineArtefact:
    """The engine for `request` on `env`: the stored one when its manifest matches, else a
    new build. `strict=False` accepts a stored engine whatever its profiles and workspace
    (TUNING_FIELDS); `build(model_bytes, request, timing_cache_bytes) -> (plan, timing_cache)`
    defaults to TensorRT's builder."""
    if not request.onnx_path.is_file():
        raise SemfuseError(f"no ONNX graph at {request.onnx_path}; run `semfuse-rt build` first")
    onnx_sha256 = sha256_of(request.onnx_path)
    expected = expected_manifest(request, env, onnx_sha256)
    stored = read_json(request.manifest_path)
    reason = "forced" if force else manifest_mismatch(stored, expected, request.engine_path,
                                                     ignore=() if strict else TUNING_FIELDS)
    if reason is None and stored is not None:  # a reason always comes without a stored manifest
        return EngineArtefact(request.engine_path, stored, False)
    _check_precision(request.precision, env)

    import onnx

    if log:
        log(f"building TensorRT {request.precision} engine {request.engine_path.name} ({reason}); "
            "this takes a while once")
    model, extra = request.prepare(onnx.load(str(request.onnx_path)), request.precision)
    cache_path = timing_cache_path(env)
    timing = cache_path.read_bytes() if cache_path.is_file() else None
    plan, timing = (build or tensorrt_build)(model.SerializeToString(), request, timing)
    request.engine_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(request.engine_path, plan)
    if timing:
        atomic_write_bytes(cache_path, timing)
    manifest = dict(expected, **extra, engine_file=request.engine_path.name,
                    engine_sha256=hashlib.sha256(plan).hexdigest(),
                    source_onnx=str(request.onnx_path))
    # Written last: a crash before this leaves a mismatch, hence a rebuild, never a stale use.
    atomic_write_bytes(request.manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return EngineArtefact(request.engine_path, manifest, True, reason)


def _import_tensorrt():
    tensorrt_version()  # the one-line reason when it is missing or too old
    import tensorrt

    return tensorrt


def tensorrt_build(model_bytes: bytes, request: EngineRequest, timing_cache: bytes | None,
                   trt=None) -> tuple[bytes, bytes | None]:
    """Parse, configure and build with TensorRT's Python API; returns (plan, timing cache)."""
    trt = trt or _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    # TensorRT 10 needs strong typing asked for (11 always has it): the graph's own types,
    # fp32 IO around an fp16 body, are then what the engine computes in.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_bytes, str(request.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)).strip() for i in range(parser.num_errors))
        raise SemfuseError(f"TensorRT cannot parse {request.onnx_path.name}: {errors or 'no details'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_mib << 20)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:
        # fp32 is meant as IEEE fp32 (the parity reference); reduced precision is explicit.
        config.clear_flag(tf32)
    profile = builder.create_optimization_profile()
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = [name for name in names if name not in request.profiles]
    if missing:
        raise SemfuseError(f"no profile for input(s) {', '.join(missing)} of {request.onnx_path.name}")
    for name in names:
        low, opt, high = request.profiles[name]
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)

    cache = None
    if timing_cache:
        try:
            cache = config.create_timing_cache(timing_cache)
            if cache is not None and not config.set_timing_cache(cache, False):
                cache = None
        except Exception:  # a damaged or foreign cache only costs tuning time
            cache = None
    if cache is None:
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SemfuseError(f"TensorRT could not build an engine from {request.onnx_path.name} (its log says why)")
    updated = config.get_timing_cache()
    return bytes(memoryview(plan)), (bytes(memoryview(updated.serialize())) if updated is not None else None)


# --- the fusion engines --------------------------------------------------------------------
FEATURES, GRADIENT = "features", "gradient"


def engines_directory(graphs_directory: Path, env: TrtEnvironment, precision: str) -> Path:
    return Path(graphs_directory) / "trt" / env.gpu.key / precision


def gradient_preparation(layer: str) -> Prepare:
    """fp16 gets the backward scaled into range (trt_precision.scale_gradient); the loss
    stays fp32 at every reduced precision."""
    def prepare(model, precision):
        from semfuse_rt.export.tensorrt.trt_precision import (
            UNSCALE_NODE,
            calibrate_gradient_scale,
            lower_precision,
            scale_gradient,
        )

        if precision == "fp32":
            return model, {}
        scale = calibrate_gradient_scale(model, pooled_size(layer)) if precision == "fp16" else 1.0
        scaled = scale_gradient(model, scale)
        return lower_precision(scaled, precision, ("loss",), (UNSCALE_NODE,)), {"gradient_scale": scale}

    return prepare


def fusion_requests(graphs_directory: Path, layer: str, precision: str, spec: ShapeSpec,
                    workspace_mib: int, env: TrtEnvironment) -> dict[str, EngineRequest]:
    """Requests for the features and gradient engines of one exported graph directory."""
    import onnx

    from semfuse_rt.export.graphs.onnx_export import FEATURES_FILE, GRADIENT_FILE

    graphs_directory = Path(graphs_directory)
    directory = engines_directory(graphs_directory, env, precision)
    feature_size = pooled_size(layer)
    requests = {}
    for name, file, graph_spec, prepare in (
            (FEATURES, FEATURES_FILE, spec, lowering()),
            (GRADIENT, GRADIENT_FILE, spec.single_image(), gradient_preparation(layer))):
        onnx_path = graphs_directory / file
        if not onnx_path.is_file():
            raise SemfuseError(f"no ONNX graph at {onnx_path}; run `semfuse-rt build` first")
        dims = onnx_input_dims(onnx.load(str(onnx_path), load_external_data=False))
        requests[name] = EngineRequest(onnx_path, directory / f"{name}.plan", precision,
                                       input_profiles(dims, graph_spec, feature_size), str(spec),
                                       workspace_mib, prepare)
    return requests


def stored_shapes(graphs_directory: Path, env: TrtEnvironment, precision: str) -> ShapeSpec | None:
    manifest = read_json(engines_directory(graphs_directory, env, precision) / f"{FEATURES}.manifest.json")
    try:
        return parse_shapes(manifest["shapes"]) if manifest else None
    except (KeyError, TypeError, SemfuseError):
        return None


def build_fusion_engines(graphs_directory: Path, layer: str, env: TrtEnvironment, *, precision: str = DEFAULT_PRECISION,
                         shapes: ShapeSpec | None = None, workspace_mib: int | None = None,
                         need: ShapePoint | None = None, force: bool = False, build: Callable | None = None,
                         log: Log | None = None) -> dict[str, EngineArtefact]:
    """The features and gradient engines, built or reused.

    With `shapes` (the `build` command) stored engines must have exactly those profiles and
    workspace. Without (a runtime), stored engines are reused whatever their profiles as
    long as they cover `need`; otherwise they are rebuilt with their own (or the default)
    spec widened to cover it.
    """
    strict = shapes is not None or workspace_mib is not None
    if shapes is None:
        shapes = stored_shapes(graphs_directory, env, precision) or DEFAULT_SHAPES
        if need is not None and not shapes.covers(need):
            shapes, strict = shapes.widened(need), True
    requests = fusion_requests(graphs_directory, layer, precision, shapes,
                               workspace_mib or DEFAULT_WORKSPACE_MIB, env)
    artefacts = {name: ensure_engine(request, env, force=force, strict=strict, build=build, log=log)
                 for name, request in requests.items()}
    if need is not None:
        wanted = {FEATURES: (need.batch, 3, need.height, need.width), GRADIENT: (1, 3, need.height, need.width)}
        stored = {name: artefacts[name].manifest.get("profiles", {}).get("image") for name in wanted}
        if not all(stored[name] and profile_covers(tuple(tuple(d) for d in stored[name]), wanted[name])
                   for name in wanted):
            # A stored engine that the manifest says fits but does not: rebuild, never guess.
            return build_fusion_engines(graphs_directory, layer, env, precision=precision,
                                        shapes=shapes.widened(need), need=need, force=True, build=build, log=log)
    return artefacts
