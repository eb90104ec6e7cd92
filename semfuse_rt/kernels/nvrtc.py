"""Compiles the fusion kernels with NVRTC for one GPU architecture, cached on disk.

The image is a cubin for the device's own sm_XY when this NVRTC knows it; for a GPU newer
than NVRTC, PTX for the newest architecture NVRTC has, which the driver JIT-compiles. The
cache key covers the sources, the NVRTC version and the options, so any change recompiles.
"""

from __future__ import annotations

from semfuse_rt.errors import SemfuseError
from semfuse_rt.cache import atomic_write_bytes, cache_dir
from semfuse_rt.kernels.cuda_api import checked, cuda_modules
from semfuse_rt.kernels.source import HEADER_FILES, KERNEL_FILE, kernel_sources, source_digest

# No --use_fast_math: the rules compare keys and Adam divides; both must round like the
# host build and torch.
BASE_OPTIONS = ("-std=c++17",)


def nvrtc_version() -> tuple[int, int]:
    _, nvrtc = cuda_modules()
    return checked(nvrtc.nvrtcVersion(), "nvrtcVersion")


def compile_target(compute_capability: tuple[int, int]) -> tuple[str, str]:
    """('sm_90', 'cubin') or, for a GPU NVRTC does not know yet, ('compute_NN', 'ptx')."""
    _, nvrtc = cuda_modules()
    wanted = compute_capability[0] * 10 + compute_capability[1]
    supported = list(checked(nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs"))
    if wanted in supported:
        return f"sm_{wanted}", "cubin"
    older = [arch for arch in supported if arch <= wanted]
    if not older:
        raise SemfuseError(
            f"this NVRTC cannot compile for compute capability {wanted // 10}.{wanted % 10} "
            f"(it supports {min(supported)}..{max(supported)})"
        )
    return f"compute_{max(older)}", "ptx"


def _program_log(nvrtc, program) -> str:
    size = checked(nvrtc.nvrtcGetProgramLogSize(program), "nvrtcGetProgramLogSize")
    log = b" " * size
    checked(nvrtc.nvrtcGetProgramLog(program, log), "nvrtcGetProgramLog")
    return log.rstrip(b"\0 ").decode(errors="replace")


def _compile(sources: dict[str, str], target: str, kind: str, options: tuple[str, ...]) -> bytes:
    _, nvrtc = cuda_modules()
    program = checked(
        nvrtc.nvrtcCreateProgram(
            sources[KERNEL_FILE].encode(),
            KERNEL_FILE.encode(),
            len(HEADER_FILES),
            [sources[name].encode() for name in HEADER_FILES],
            [name.encode() for name in HEADER_FILES],
        ),
        "nvrtcCreateProgram",
    )
    try:
        (status,) = nvrtc.nvrtcCompileProgram(program, len(options), [o.encode() for o in options])
        if int(status) != 0:
            raise SemfuseError(
                f"NVRTC could not compile the fusion kernels for {target}:\n{_program_log(nvrtc, program)}"
            )
        if kind == "cubin":
            size = checked(nvrtc.nvrtcGetCUBINSize(program), "nvrtcGetCUBINSize")
            image = b" " * size
            checked(nvrtc.nvrtcGetCUBIN(program, image), "nvrtcGetCUBIN")
        else:
            size = checked(nvrtc.nvrtcGetPTXSize(program), "nvrtcGetPTXSize")
            image = b" " * size
            checked(nvrtc.nvrtcGetPTX(program, image), "nvrtcGetPTX")
        return image
    finally:
        checked(nvrtc.nvrtcDestroyProgram(program), "nvrtcDestroyProgram")


def kernel_image(compute_capability: tuple[int, int]) -> bytes:
    """The compiled module for a device of this compute capability (cubin or PTX bytes)."""
    target, kind = compile_target(compute_capability)
    options = (f"--gpu-architecture={target}", *BASE_OPTIONS)
    major, minor = nvrtc_version()
    sources = kernel_sources()
    digest = source_digest(sources, f"nvrtc {major}.{minor}", *options)
    path = cache_dir("kernels") / f"fusion-{digest}-{target}.{kind}"
    if path.exists():
        return path.read_bytes()
    image = _compile(sources, target, kind, options)
    atomic_write_bytes(path, image)
    return image
