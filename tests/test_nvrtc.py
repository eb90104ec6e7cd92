"""The CUDA side of the fusion kernels, as far as a machine without a GPU can check it.

- nvcc compiles fusion_kernels.cu to PTX for sm_87 (Jetson Orin) and sm_90 (Hopper) with
  every warning an error, so a syntax, type or device-code error fails CI;
- the PTX entry points are exactly the kernels the launcher knows, and each one's
  parameter list (sizes, alignments, integer/float kinds) is what the launcher packs for
  cuLaunchKernel, which reads raw bytes and cannot check them itself;
- g++ compiles the host build with every warning an error;
- NVRTC (when cuda-python is installed) compiles the same source to a cubin, as it will on
  a GPU at first use: no headers, the options the runner uses;
- benchmarks/kernels_gpu.py imports and, without a GPU, exits 2 with one line of reason;
- with a GPU and cuda-python, every kernel matches the Torch rules (tests/support/kernels/gpu_parity.py).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from semfuse_rt.kernels import abi, source

REPO = Path(__file__).resolve().parents[1]
KERNEL = source.SOURCE_DIR / source.KERNEL_FILE


def nvcc() -> str:
    path = shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    )
    if path is None:
        pytest.skip("nvcc is not installed: the CUDA compile check needs the CUDA toolkit")
    return path


@pytest.fixture(scope="module", params=["sm_87", "sm_90"])
def ptx(request, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("ptx") / f"fusion_{request.param}.ptx"
    command = [
        nvcc(),
        "-ptx",
        f"-arch={request.param}",
        "-std=c++17",
        "-Werror",
        "all-warnings",
        str(KERNEL),
        "-o",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc failed for {request.param}:\n{result.stderr}"
    return out.read_text()


def ptx_entries(ptx_text: str) -> dict[str, list[str]]:
    """Entry name -> its parameter declarations, e.g. '.param .u32 name_param_1'."""
    entries = {}
    for match in re.finditer(r"\.entry\s+(\w+)\(\s*(.*?)\s*\)", ptx_text, flags=re.DOTALL):
        entries[match.group(1)] = [p.strip() for p in match.group(2).split(",") if p.strip()]
    return entries


def parameter_layout(declaration: str) -> tuple[str, int, int]:
    """('int' | 'float' | 'bytes', size, alignment) of one PTX parameter declaration."""
    array = re.search(r"\.align (\d+) \.b8 \w+\[(\d+)\]", declaration)
    if array:
        return "bytes", int(array.group(2)), int(array.group(1))
    scalar = re.search(r"\.param \.([usbf])(\d+)", declaration)
    assert scalar, declaration
    size = int(scalar.group(2)) // 8
    return ("float" if scalar.group(1) == "f" else "int"), size, size


def ctypes_layout(kind: type) -> tuple[str, int, int]:
    if issubclass(kind, ctypes.Structure):
        return "bytes", ctypes.sizeof(kind), ctypes.alignment(kind)
    is_float = kind in (ctypes.c_float, ctypes.c_double)
    return ("float" if is_float else "int"), ctypes.sizeof(kind), ctypes.alignment(kind)


@pytest.mark.slow
def test_nvcc_emits_exactly_the_kernels_the_launcher_knows(ptx):
    assert set(ptx_entries(ptx)) == set(abi.KERNEL_PARAMETERS)


@pytest.mark.slow
def test_launcher_packs_each_kernel_parameter_as_the_kernel_declares_it(ptx):
    entries = ptx_entries(ptx)
    for name, kinds in abi.KERNEL_PARAMETERS.items():
        declared = [parameter_layout(p) for p in entries[name]]
        packed = [ctypes_layout(kind) for kind in kinds]
        assert packed == declared, name


@pytest.mark.slow
def test_kernels_use_16_byte_vector_memory_access(ptx):
    body = ptx.split(".entry semfuse_choose_max_f16(")[1].split(".entry")[0]
    assert "ld.global.v4.u32" in body and "st.global.v4" in body
    assert "cvt.f32.f16" in body  # fp16 -> fp32 by the hardware instruction, not the bit-level path


def test_host_build_compiles_without_warnings(tmp_path):
    from support.kernels.host_build import CXX_FLAGS, compiler

    command = [compiler(), *CXX_FLAGS, "-Werror", "-fsyntax-only", "-x", "c++", str(KERNEL)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _nvrtc_or_skip():
    from semfuse_rt.errors import SemfuseError
    from semfuse_rt.kernels.cuda_api import cuda_modules

    try:
        cuda_modules()
    except SemfuseError:
        pytest.skip("cuda-python is not installed: NVRTC cannot be exercised (pip install 'semfuse-rt[gpu]')")


@pytest.mark.slow
@pytest.mark.parametrize("capability", [(8, 7), (9, 0)])
def test_nvrtc_compiles_the_same_source_to_a_cubin(tmp_path, monkeypatch, capability):
    _nvrtc_or_skip()
    from semfuse_rt.kernels import nvrtc

    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path))
    image = nvrtc.kernel_image(capability)
    assert image[:4] == b"\x7fELF"
    for name in abi.KERNEL_PARAMETERS:
        assert name.encode() in image
    cached = list(tmp_path.rglob("*.cubin"))
    assert len(cached) == 1 and cached[0].read_bytes() == image
    assert nvrtc.kernel_image(capability) == image


def test_nvrtc_falls_back_to_ptx_for_a_gpu_newer_than_itself():
    _nvrtc_or_skip()
    from semfuse_rt.kernels import nvrtc

    target, kind = nvrtc.compile_target((99, 0))
    assert kind == "ptx" and target.startswith("compute_")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the benchmark would run for real")
def test_gpu_benchmark_says_in_one_line_why_it_cannot_run():
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "kernels_gpu.py")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kernels_gpu: cannot run here: ")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_kernels_match_the_torch_rules():
    _nvrtc_or_skip()
    from support.kernels.gpu_parity import check_parity
    from semfuse_rt.kernels.runner import KernelRunner

    with KernelRunner(torch.cuda.current_device()) as runner:
        failures = [r for r in check_parity(runner) if not r.ok]
    assert not failures, failures


class FakeDriver:
    """Stands in for cuda-python's driver module: records what the runner asks of it and
    reads each launch's parameters back the way cuLaunchKernel does (raw bytes at the
    addresses in the void** array, sized by the kernel's declared parameters)."""

    class CUdevice_attribute:  # noqa: N801 - cuda-python's name
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = "major"
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = "minor"
        CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = "sms"

    class CUstream:
        def __init__(self, handle: int):
            self.handle = handle

    def __init__(self):
        self.calls: list[str] = []
        self.launches: list[dict] = []

    def cuInit(self, flags):
        return (0,)

    def cuDeviceGet(self, ordinal):
        return (0, f"device {ordinal}")

    def cuDeviceGetAttribute(self, attribute, device):
        return (0, {"major": 9, "minor": 0, "sms": 132}[attribute])

    def cuDevicePrimaryCtxRetain(self, device):
        self.calls.append("retain")
        return (0, "context")

    def cuCtxPushCurrent(self, context):
        self.calls.append("push")
        return (0,)

    def cuModuleLoadData(self, image):
        self.calls.append("load")
        return (0, "module")

    def cuModuleGetFunction(self, module, name):
        return (0, name.decode())

    def cuLaunchKernel(self, function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        kinds = abi.KERNEL_PARAMETERS[function]
        addresses = (ctypes.c_void_p * len(kinds)).from_address(params)
        values = []
        for kind, address in zip(kinds, addresses, strict=True):
            value = kind.from_address(address)
            if isinstance(value, abi.InputPointers):
                values.append([p for p in value.p if p])
            elif isinstance(value, abi.AdamScalars):
                values.append({field: getattr(value, field) for field, _ in value._fields_})
            else:
                values.append(value.value)
        self.launches.append(
            {
                "name": function,
                "grid": (gx, gy, gz),
                "block": (bx, by, bz),
                "shared": shared,
                "stream": stream.handle,
                "values": values,
            }
        )
        return (0,)

    def cuModuleGetGlobal(self, module, name):
        sizes = {b"semfuse_first_layer_weight": 64 * 27 * 4, b"semfuse_first_layer_bias": 64 * 4}
        return (0, f"&{name.decode()}", sizes[name])

    def cuMemcpyDtoDAsync(self, destination, source, count, stream):
        self.calls.append(("copy", destination, source, count, stream.handle))
        return (0,)

    def cuModuleUnload(self, module):
        self.calls.append("unload")
        return (0,)

    def cuCtxPopCurrent(self):
        self.calls.append("pop")
        return (0, "context")

    def cuDevicePrimaryCtxRelease(self, device):
        self.calls.append("release")
        return (0,)


@pytest.fixture
def fake_runner(monkeypatch):
    from semfuse_rt.kernels import runner

    driver = FakeDriver()
    monkeypatch.setattr(runner, "cuda_modules", lambda: (driver, None))
    monkeypatch.setattr(runner, "kernel_image", lambda capability: b"cubin for %d.%d" % capability)
    return runner.KernelRunner(0), driver


def test_runner_launches_with_the_callers_pointers_stream_and_grid(fake_runner):
    from semfuse_rt.kernels.adam_scalars import adam_scalars

    kernels, driver = fake_runner
    with kernels:
        kernels.choose_max([0x1000, 0x2000], 0x3000, 0x4000, 1000, "float16", stream=77)
        kernels.choose_max([0x1000, 0x2000, 0x5000], 0x3000, 0x4000, 64 << 20, "float32")
        kernels.cam_choose_max([0x10, 0x20], [0x30, 0x40], 0x50, 0x60, (2, 3, 19, 45), "float16", stream=5)
        kernels.majority_fuse([0x10, 0x20], 0x70, 0x80, 0x90, 6, 19, 45, "float32", window=5, stream=9)
        kernels.majority_filter(0x70, 0x80, 3, 70000, 19, 45, window=7)
        kernels.adam_update(0x1, 0x2, 0x3, 0x4, 663, 3, 0.5, stream=11)
        kernels.advance_step(0x6)
        kernels.adam_update_device_step(0x1, 0x2, 0x3, 0x4, 663, 0x6, 0.5)
    first, big, cam, fuse, majority, adam, advance, device_step = driver.launches
    assert first == {
        "name": "semfuse_choose_max_f16",
        "grid": (1, 1, 1),
        "block": (256, 1, 1),
        "shared": 0,
        "stream": 77,
        "values": [[0x1000, 0x2000], 2, 1000, 0x3000, 0x4000],
    }
    assert big["name"] == "semfuse_choose_max_f32" and big["grid"] == (132 * 8, 1, 1)  # one wave, grid-stride
    assert big["values"][:3] == [[0x1000, 0x2000, 0x5000], 3, 64 << 20]
    assert cam["values"] == [[0x10, 0x20], [0x30, 0x40], 2, 3, 19 * 45, 2 * 3 * 19 * 45, 0x50, 0x60]
    # 45 x 19 planes in 32 x 8 tiles; shared memory holds the tile plus a 2-pixel halo
    assert fuse["grid"] == (2, 3, 6) and fuse["block"] == (32, 8, 1) and fuse["shared"] == 36 * 12 * 4
    assert fuse["values"] == [[0x10, 0x20], 2, 0x70, 6, 19, 45, 2, 0x80, 0x90] and fuse["stream"] == 9
    assert majority["grid"] == (2, 3, 65535) and majority["values"] == [0x70, 3, 70000, 19, 45, 3, 0x80]
    expected = adam_scalars(3, 0.5)
    assert adam["values"][:5] == [0x1, 0x2, 0x3, 0x4, 663]
    assert adam["values"][5] == {field: getattr(expected, field) for field, _ in expected._fields_}
    assert advance["values"] == [0x6] and advance["grid"] == (1, 1, 1)
    assert device_step["values"] == [0x1, 0x2, 0x3, 0x4, 663, 0.5, 0.9, 0.999, 1e-8, 0x6]
    assert driver.calls == ["retain", "push", "load", "unload", "pop", "release"]


def test_first_layer_gradient_launch(fake_runner):
    kernels, driver = fake_runner
    with kernels:
        kernels.set_first_layer_weights(0x100, 0x200, stream=3)
        kernels.first_layer_gradient(0x10, 0x20, 0x30, (2, 3, 37, 53), True, 0x40, 0x50, 0x60, stream=3)
        with pytest.raises(ValueError, match="N,3,H,W"):
            kernels.first_layer_gradient(0x10, 0x20, 0x30, (1, 4, 8, 8), True, 0x40, 0x50, 0x60)
    assert ("copy", "&semfuse_first_layer_weight", 0x100, 64 * 27 * 4, 3) in driver.calls
    assert ("copy", "&semfuse_first_layer_bias", 0x200, 64 * 4, 3) in driver.calls
    gradient, partial_sums = driver.launches
    # 53 x 37 pixels in 16 x 16 tiles; one thread per position of an 18 x 18 halo tile
    assert gradient["grid"] == (4, 3, 2) and gradient["block"] == (352, 1, 1) and gradient["stream"] == 3
    assert gradient["values"] == [0x10, 0x20, 0x30, 37, 53, 1, 0x40, 0x60]
    assert partial_sums["grid"] == (2, 1, 1) and partial_sums["values"] == [0x60, 12, 0x50]


def test_runner_refuses_what_would_corrupt_memory(fake_runner):
    kernels, _ = fake_runner
    with kernels:
        with pytest.raises(ValueError, match="in place"):
            kernels.majority_filter(0x70, 0x70, 2, 1, 8, 8)
        with pytest.raises(ValueError, match="2..8 inputs"):
            kernels.choose_max([0x1] * 9, 0x2, 0x3, 10, "float32")
        with pytest.raises(ValueError, match="float32 or float16"):
            kernels.choose_max([0x1, 0x2], 0x2, 0x3, 10, "bfloat16")
    with pytest.raises(RuntimeError, match="with"):
        kernels.choose_max([0x1, 0x2], 0x3, 0x4, 10, "float32")
