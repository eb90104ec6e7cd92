"""torch's intra-op threads for a block of torch ops on the CPU.

The CPU pipeline's own torch work (the choose-max reduction, the DT-CWT start as torch ops,
Adam) is many short memory-bound ops. With two OpenMP threads each op forks and joins, and
when the cores are busy with anything else a join waits for a descheduled thread: on the
2-core VM under load, the DT-CWT start of a 640 x 512 grey pair took 0.4-4.9 s with two
threads and 0.06-0.22 s with one (and ONNX Runtime's threads spin on the same cores).
"""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block with `count` torch threads, restoring the number before it after."""
    before = torch.get_num_threads()
    if before == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
