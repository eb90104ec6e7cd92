"""Bytes each kernel call must move through DRAM (reads + writes), the yardstick of a
memory-bound kernel: achieved bandwidth = these bytes / time, compared with what a
device-to-device copy achieves. README.md explains each term.

E = N*C*H*W elements per feature map, s = bytes per feature element (4 fp32, 2 fp16),
labels are int32, weights and Adam state fp32. Only compulsory traffic is counted: a
majority block's halo re-reads and cache misses are overhead, not work.
"""

from __future__ import annotations

LABEL_BYTES = 4


def choose_max_bytes(k: int, elements: int, s: int) -> int:
    return k * elements * s + elements * s + elements * LABEL_BYTES


def cam_choose_max_bytes(k: int, n: int, c: int, h: int, w: int, s: int) -> int:
    return choose_max_bytes(k, n * c * h * w, s) + k * n * h * w * 4


def majority_filter_bytes(elements: int) -> int:
    return 2 * elements * LABEL_BYTES


def majority_fuse_bytes(elements: int, s: int) -> int:
    # One gathered feature read per element (the chosen input's), one fused write.
    return majority_filter_bytes(elements) + 2 * elements * s


def adam_bytes(elements: int) -> int:
    return 4 * elements * 4 + 3 * elements * 4  # read x, g, m, v; write x, m, v
