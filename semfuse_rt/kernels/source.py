"""The fusion kernels' CUDA C++ source as text, and the constants Python shares with it.

The header is the single place where the limits are written; Python reads them from it so
the launchers can never disagree with the compiled code.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
KERNEL_FILE = "fusion_kernels.cu"
HEADER_FILE = "fusion_kernels.cuh"
GRADIENT_HEADER_FILE = "first_layer_gradient.cuh"
HEADER_FILES = (HEADER_FILE, GRADIENT_HEADER_FILE)


def kernel_sources() -> dict[str, str]:
    """File name -> text, for the .cu and the headers it includes."""
    return {name: (SOURCE_DIR / name).read_text(encoding="utf-8") for name in (KERNEL_FILE, *HEADER_FILES)}


def source_digest(sources: dict[str, str], *build_settings: str) -> str:
    """A hash of `sources` (kernel_sources()) plus whatever else decides the binary
    (compiler, flags, architecture)."""
    digest = hashlib.sha256()
    for name, text in sorted(sources.items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    for setting in build_settings:
        digest.update(setting.encode() + b"\0")
    return digest.hexdigest()[:24]


def _header_define(name: str, header: str = HEADER_FILE) -> int:
    text = (SOURCE_DIR / header).read_text(encoding="utf-8")
    match = re.search(rf"^#define {name} (\d+)\s*$", text, flags=re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{header} lost its #define {name}")
    return int(match.group(1))


MAX_INPUTS = _header_define("SEMFUSE_MAX_INPUTS")
TILE_W = _header_define("SEMFUSE_TILE_W")
TILE_H = _header_define("SEMFUSE_TILE_H")
MAX_WINDOW = _header_define("SEMFUSE_MAX_WINDOW")
GRAD_TILE = _header_define("SEMFUSE_GRAD_TILE", GRADIENT_HEADER_FILE)
GRAD_CHANNELS = _header_define("SEMFUSE_GRAD_CHANNELS", GRADIENT_HEADER_FILE)
