"""Will a fuse fit in memory? An estimate made from the image sizes alone (read from the
headers, before anything is decoded), against a budget: a request that cannot fit is
refused in one line instead of being killed by the kernel's OOM killer halfway through,
and one that would not fit whole is fused in tiles that do.

Calibrated on the 2-core VM with the default pipeline at relu1_1 on ONNX Runtime (peak RSS,
getrusage), where a non-semantic fuse streams the inputs (one input's features at a time,
the choose-max target reduced in place, the DT-CWT start one input at a time beyond two,
one shared ONNX Runtime arena handed back after the start): whole pairs of 1 and 2 MP peak
at 1.03 and 1.69 GiB, about 0.37 GiB of libraries, weights and sessions plus 700 bytes a
pixel; tiled, a 12 MP pair in crops of 1.5 and 3.4 MP peaked at 1.97 and 3.12 GiB, 770-900
bytes a crop pixel over the whole-image buffers. Each further input adds about 24 bytes a
pixel (its pixels in the crop; 1 MP with 2, 8, 16 inputs: 1.03, 1.14, 1.35 GiB). The
semantic methods stack every input's features (tiled, each crop): `cam-max` peaked at 1.35,
3.81 and 7.16 GiB for pairs of 0.27, 1 and 2 MP and at 5.52 GiB for three 1 MP inputs, 1700
bytes a pixel of each input over the fixed part; `cam-majority` at 4.21 GiB for the 1 MP
pair (1900 bytes).
"""
from __future__ import annotations

import re
from decimal import Decimal

try:
    import resource  # here, not where a line about running short of memory needs it: it may not load then
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

from semfuse_rt.errors import SemfuseError

FIXED_BYTES = 512 * 2**20
STREAMED_BYTES_PER_PIXEL = 900  # two inputs' working set, per pixel of the image or crop
FURTHER_INPUT_BYTES_PER_PIXEL = 32
STACKED_BYTES_PER_INPUT_PIXEL = 2000  # semantic methods: every input's features at once
DEFAULT_SHARE = 0.8  # of the memory available when the fuse starts
# The default budget is also at most this: crops of about 2 MP, which it allows a pair of
# 24 MP photographs, already spend most of their time on their core rather than their halo,
# so a larger default would buy little speed for the memory it takes from everything else.
DEFAULT_CEILING = 3 * 2**30
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# Far beyond any machine, and small enough for the float arithmetic of the estimates.
MAX_BUDGET = 1024 * 2**40


# A start-only fuse (engine/fuse/start_only.py: numpy and OpenCV, no network) holds far less: whole
# processes with the default start, peak RSS, 2026-12-07 on the 2-core VM: pairs of 1, 4 and
# 12 MP at 183, 415 and 993 MiB, four 4 MP inputs at 728 MiB (about 75 bytes a pixel over
# 106 MiB of libraries, and 39 for each input beyond two).
START_ONLY_FIXED_BYTES = 128 * 2**20
START_ONLY_BYTES_PER_PIXEL = 80
START_ONLY_FURTHER_INPUT_BYTES_PER_PIXEL = 45


def bytes_per_pixel(count: int, streamed: bool = True) -> int:
    if not streamed:
        return STACKED_BYTES_PER_INPUT_PIXEL * count
    return STREAMED_BYTES_PER_PIXEL + FURTHER_INPUT_BYTES_PER_PIXEL * max(0, count - 2)


def estimated_peak_bytes(count: int, height: int, width: int, streamed: bool = True,
                         start_only: bool = False) -> int:
    if start_only:
        per_pixel = START_ONLY_BYTES_PER_PIXEL + START_ONLY_FURTHER_INPUT_BYTES_PER_PIXEL * max(0, count - 2)
        return START_ONLY_FIXED_BYTES + per_pixel * height * width
    return FIXED_BYTES + bytes_per_pixel(count, streamed) * height * width


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError, MemoryError):  # MemoryError: asked while short of memory
        pass
    return None


def _shown(text: object) -> str:
    """A value for a message, shortened: a 400-digit number stays one readable line."""
    text = str(text)
    return text if len(text) <= 24 else f"{text[:12]}...{text[-6:]} ({len(text)} characters)"


def parse_size(text: str | int) -> int:
    """'8G', '500M', '1.5G' or a number of bytes, from 1 byte to MAX_BUDGET."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
        if not match:
            raise SemfuseError(f"--memory-budget takes a size such as 8G or 500M, got {_shown(text)!r}")
        # Decimal arithmetic: float() of a 400-digit number is inf, which int() refuses.
        size = int(Decimal(match.group(1)) * _UNITS[match.group(2).upper()])
    if not 1 <= size <= MAX_BUDGET:
        raise SemfuseError(f"--memory-budget must be from 1 byte to {MAX_BUDGET // _UNITS['T']}T, got {_shown(text)}")
    return size


def describe(size: float) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


# A tiled fuse also holds the float result the tiles are cross-faded into (12 bytes a pixel),
# the output image (at most 6) and, unless they are spilled to disk, the decoded inputs (at
# most 6 bytes a pixel each: 16-bit colour).
DECODED_BYTES_PER_PIXEL = 6
ACCUMULATOR_BYTES_PER_PIXEL = 12 + 6
# A tiled semantic fuse holds each input's CAM over the whole image (4 bytes a pixel), made by
# upsampling, normalising and averaging the layers' maps (about four such maps at once).
CAM_BYTES_PER_INPUT_PIXEL = 16
# Inputs are spilled to disk (engine/io/spilled_images.py) when decoded they would take more
# than this share of the budget: a long stack of large frames then costs no more memory
# than two of them.
SPILL_SHARE = 0.25


def free_device_bytes() -> int | None:
    """Free memory of the current CUDA device; None without one."""
    try:
        import torch

        return int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else None
    except RuntimeError:  # a driver that cannot answer
        return None


def default_budget(on_gpu: bool = False, capped: bool = True) -> tuple[int | None, str]:
    """The budget when none is given, and how it came about (for messages): a share of the
    memory available, of the GPU's free memory where the fuse runs on a GPU (the estimate
    per pixel is the CPU pipeline's, not yet calibrated on a GPU). `capped`: at most
    DEFAULT_CEILING, which only sizes tiles of the streamed methods: a semantic fuse may
    take the whole share (and `cam`, which is never tiled, must) rather than be cut up or
    refused."""
    available = free_device_bytes() if on_gpu else available_bytes()
    if available is None:
        return None, "the memory available is unknown"
    where = "free on the GPU" if on_gpu else "available"
    share = int(available * DEFAULT_SHARE)
    if capped and share > DEFAULT_CEILING:
        return DEFAULT_CEILING, f"the default of {describe(DEFAULT_CEILING)}; set --memory-budget to change it"
    return share, f"{DEFAULT_SHARE:.0%} of the {describe(available)} {where}; set --memory-budget to change it"


def budget_or_default(budget: int | None, on_gpu: bool = False, capped: bool = True) -> int | None:
    return budget if budget is not None else default_budget(on_gpu, capped)[0]


def spill_inputs(count: int, height: int, width: int, budget: int | None = None) -> bool:
    """Whether decoded inputs of this size belong on disk rather than in host memory."""
    budget = budget_or_default(budget)
    return budget is not None and DECODED_BYTES_PER_PIXEL * count * height * width > SPILL_SHARE * budget


def tile_room(count: int, height: int, width: int, budget: int | None = None, spilled: bool = False,
              on_gpu: bool = False, streamed: bool = True) -> int:
    """How many crop pixels a tile may have: what the budget leaves after the whole-image
    buffers of a tiled fuse, shared by the `count` inputs' per-pixel working set.
    `streamed=False`: a semantic method, which stacks the inputs' features in each crop and
    holds their CAMs over the whole image."""
    budget = budget_or_default(budget, on_gpu, capped=streamed)
    if budget is None:
        return 2**62
    per_pixel = ACCUMULATOR_BYTES_PER_PIXEL + (0 if spilled else DECODED_BYTES_PER_PIXEL * count)
    if not streamed:
        per_pixel += CAM_BYTES_PER_INPUT_PIXEL * count
    return max(0, budget - FIXED_BYTES - per_pixel * height * width) // bytes_per_pixel(count, streamed)


def budget_problem(count: int, height: int, width: int, budget: int | None = None,
                   streamed: bool = True, on_gpu: bool = False, start_only: bool = False) -> str | None:
    """Why fusing `count` images of width x height at once would not fit `budget` bytes
    (default: default_budget()), in a few words; None if it would."""
    where = "--memory-budget"
    if budget is None:
        budget, where = default_budget(on_gpu, capped=streamed)
        if budget is None:
            return None
    need = estimated_peak_bytes(count, height, width, streamed, start_only)
    if need <= budget:
        return None
    return (f"fusing {count} images of {width}x{height} needs about {describe(need)}, over the memory budget of "
            f"{describe(budget)} ({where})")


def check_available(count: int, height: int, width: int, budget: int, streamed: bool = True,
                    on_gpu: bool = False, tileable: bool = True, start_only: bool = False) -> None:
    """A fuse that an explicit budget lets run whole but that needs more than the memory
    there is: refused before any work, since it would end in the OOM killer or a failed
    allocation halfway through."""
    available = free_device_bytes() if on_gpu else available_bytes()
    need = estimated_peak_bytes(count, height, width, streamed, start_only)
    if available is not None and need > available:
        where = "free on the GPU" if on_gpu else "available"
        fix = "lower --memory-budget to fuse in tiles that fit" if tileable else "fuse smaller images"
        raise SemfuseError(f"fusing {count} images of {width}x{height} whole needs about {describe(need)}, more than "
                           f"the {describe(available)} {where}, although --memory-budget {describe(budget)} allows "
                           f"it; {fix}")


# How the libraries under a fuse say that an allocation failed, besides MemoryError (numpy,
# Pillow): torch's CPU allocator and CUDA, ONNX Runtime's arena, OpenCV.
_OUT_OF_MEMORY_TEXTS = ("can't allocate memory", "out of memory", "bad_alloc", "bad allocation",
                        "failed to allocate memory", "insufficient memory", "cannot allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    if not isinstance(error, Exception) or isinstance(error, SemfuseError):
        return False
    text = str(error).lower()
    return any(phrase in text for phrase in _OUT_OF_MEMORY_TEXTS)


def address_space_limit() -> int | None:
    """RLIMIT_AS (ulimit -v) where one is set: it, not the memory available, is then what ran out."""
    if resource is None:
        return None
    try:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (OSError, ValueError):
        return None
    return None if limit == resource.RLIM_INFINITY else limit


def memory_at_hand(on_gpu: bool = False) -> str:
    """For a line about running out of memory: " with 3.1 GiB available" and, where one is
    set, " and a 2.0 GiB limit on this process's address space (ulimit -v)"; "" where
    neither is known."""
    available = free_device_bytes() if on_gpu else available_bytes()
    have = f" with {describe(available)} {'free on the GPU' if on_gpu else 'available'}" if available else ""
    limit = address_space_limit()
    if limit is not None and not on_gpu:
        have += f"{' and' if have else ' with'} a {describe(limit)} limit on this process's address space (ulimit -v)"
    return have


def out_of_memory(count: int, height: int, width: int, *, budget: int | None, streamed: bool = True,
                  on_gpu: bool = False, tiles: int = 1, tileable: bool = True) -> SemfuseError:
    """The one line for a fuse that ran out of memory although its estimate fitted the
    budget (a budget above what the machine has, a ulimit, other processes): what it needed
    and which options lower that."""
    need = estimated_peak_bytes(count, height, width, streamed)
    have = memory_at_hand(on_gpu)
    how = f"in {tiles} tiles" if tiles > 1 else "whole"
    given = f" (now {describe(budget)})" if budget is not None else ""
    if not tileable:
        fix = "fuse smaller images, or refuse them with --max-pixels (this method is not tiled)"
    else:
        fix = (f"lower --memory-budget{given} or set a smaller --tile to fuse in tiles that fit, or refuse such "
               "images with --max-pixels")
    return SemfuseError(f"out of memory fusing {count} images of {width}x{height} {how}{have} (the whole fuse "
                        f"needs about {describe(need)}); {fix}")
