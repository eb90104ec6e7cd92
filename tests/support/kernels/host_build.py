"""Builds the kernels' host library (g++) into the user cache, once per source version.

The library holds the same per-element code the GPU runs, wrapped in loops that replay the
GPU's threads on the CPU; the tests load it through ctypes. The file name carries a hash of
the sources, the compiler's identity and the flags, so an edit rebuilds and a stale library
is never loaded. Builds happen in a scratch folder and are renamed into place, so
concurrent test processes never load half-written files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from semfuse_rt.errors import SemfuseError
from semfuse_rt.cache import cache_dir
from semfuse_rt.kernels.source import KERNEL_FILE, kernel_sources, source_digest

# -ffp-contract=off: no fused multiply-adds, so the host rounds like numpy and torch's CPU
# kernels. -fno-strict-aliasing: the 16-byte pack loads read arrays through a struct type.
CXX_FLAGS = (
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-shared",
    "-ffp-contract=off",
    "-fno-strict-aliasing",
    "-Wall",
    "-Wextra",
)


def compiler() -> str:
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise SemfuseError(f"the kernels' host build needs a C++ compiler; {name!r} is not on PATH (set CXX)")
    return path


def compiler_identity(cxx: str) -> str:
    result = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else cxx


def build_host_library() -> Path:
    """Path of the host library for the current sources, building it if needed."""
    cxx = compiler()
    sources = kernel_sources()
    digest = source_digest(sources, compiler_identity(cxx), *CXX_FLAGS)
    target = cache_dir("kernels") / f"fusion_host-{digest}.so"
    if target.exists():
        return target
    # Compile the very texts that were hashed (copied to a scratch folder), so a source
    # edited mid-build cannot end up under the wrong hash.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as scratch:
        for name, text in sources.items():
            Path(scratch, name).write_text(text, encoding="utf-8")
        built = Path(scratch, target.name)
        command = [cxx, *CXX_FLAGS, "-x", "c++", str(Path(scratch, KERNEL_FILE)), "-o", str(built)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SemfuseError(
                f"host build of the fusion kernels failed: {' '.join(command)}\n{result.stderr}"
            )
        os.replace(built, target)
    return target
