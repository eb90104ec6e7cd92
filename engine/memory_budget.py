"""Will a fuse fit in memory? An estimate made from the image sizes alone (read from the
headers, before anything is decoded), against a budget: a request that cannot fit is
refused in one line instead of being killed by the kernel's OOM killer halfway through.

The estimate is calibrated on the 2-core VM with the default pipeline at relu1_1 on ONNX
Runtime (peak RSS by /usr/bin/time): 2 x 520^2 colour 1.66 GB, 3 x 520^2 2.26 GB, 2 x 1.5 MP
7.35 GB, 3 x 1.5 MP 11.3 GB: about 2.2-2.6 KB per input pixel over a fixed ~0.6 GB
(libraries, weights, sessions). Tiled, each of ONNX Runtime's sessions keeps its own arena
across crops of different sizes, which costs more per crop pixel: a 12 MP pair in 0.37 MP
crops peaked at 3.9 GiB, about 4.1 KB per input pixel of a crop. The per-pixel constant is
set from that, so whole images are estimated high (2 x 1.5 MP: 13.4 GB against 7.35 GB
measured) and tiled ones about right; deeper layers hold smaller maps.
"""
from __future__ import annotations

import re

from semfuse_rt.errors import SemfuseError

FIXED_BYTES = 800 * 2**20
BYTES_PER_INPUT_PIXEL = 4200
DEFAULT_SHARE = 0.8  # of the memory available when the fuse starts
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


# From the third input on, a non-semantic fuse streams the inputs' features through the rule
# (Fuser._streamed_target), so each further input adds only its pixels and its share of the
# DT-CWT start: 370-730 bytes a pixel measured at 520^2 (3 and 4 inputs), rounded up as for tiles.
STREAMED_BYTES_PER_INPUT_PIXEL = 1200


def bytes_per_pixel(count: int, streamed: bool = True) -> int:
    if not streamed or count <= 2:
        return BYTES_PER_INPUT_PIXEL * count
    return BYTES_PER_INPUT_PIXEL * 2 + STREAMED_BYTES_PER_INPUT_PIXEL * (count - 2)


def estimated_peak_bytes(count: int, height: int, width: int, streamed: bool = True) -> int:
    return FIXED_BYTES + bytes_per_pixel(count, streamed) * height * width


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def parse_size(text: str | int) -> int:
    """'8G', '500M', '1.5G' or a number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
        if not match:
            raise SemfuseError(f"--memory-budget takes a size such as 8G or 500M, got {text!r}")
        size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size <= 0:
        raise SemfuseError(f"--memory-budget must be positive, got {text}")
    return size


def describe(size: float) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


# A tiled fuse also holds the decoded inputs (at most 6 bytes a pixel each) and the float
# result the tiles are cross-faded into (12 bytes a pixel).
DECODED_BYTES_PER_PIXEL = 6
ACCUMULATOR_BYTES_PER_PIXEL = 12


def budget_or_default(budget: int | None) -> int | None:
    if budget is not None:
        return budget
    available = available_bytes()
    return int(available * DEFAULT_SHARE) if available is not None else None


def tile_room(count: int, height: int, width: int, budget: int | None = None) -> int:
    """How many crop pixels a tile may have: what the budget leaves after the whole-image
    buffers of a tiled fuse, shared by the `count` inputs' per-pixel working set."""
    budget = budget_or_default(budget)
    if budget is None:
        return 2**62
    whole = (DECODED_BYTES_PER_PIXEL * count + ACCUMULATOR_BYTES_PER_PIXEL) * height * width
    return max(0, budget - FIXED_BYTES - whole) // bytes_per_pixel(count)


def budget_problem(count: int, height: int, width: int, budget: int | None = None,
                   streamed: bool = True) -> str | None:
    """Why fusing `count` images of width x height at once would not fit `budget` bytes
    (default: DEFAULT_SHARE of the memory available now), in a few words; None if it would."""
    where = "--memory-budget"
    if budget is None:
        available = available_bytes()
        if available is None:
            return None
        budget = int(available * DEFAULT_SHARE)
        where = f"{DEFAULT_SHARE:.0%} of the {describe(available)} available; set --memory-budget to change it"
    need = estimated_peak_bytes(count, height, width, streamed)
    if need <= budget:
        return None
    return (f"fusing {count} images of {width}x{height} needs about {describe(need)}, over the memory budget of "
            f"{describe(budget)} ({where})")
